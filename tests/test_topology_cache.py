"""The hot path's per-process cache of queues and topic subscribers, across two server
processes on one database: a change made through one process reaches the other within
MESH_TOPOLOGY_CHECK_MS (the topology version), not only when its cache happens to empty.

Each case changes something only a cache could hide: a new subscription (the other process
would keep fanning out to the old list), a removed one, and a queue's message-size limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.test_live_server import MANAGEMENT, REST, LiveServer, another_process, live_server

CHECK_MS = 200
# Far above the bound, for a loaded machine: a switch that takes longer is a failure.
PATIENCE = 20.0
TOPIC = "a%2Fb%2Fc%2Ftopo%2Fevents"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    settings = {"MESH_TOPOLOGY_CHECK_MS": str(CHECK_MS)}
    with live_server(tmp_path_factory.mktemp("topology"), settings) as first, another_process(first) as second_base:
        headers = {"Authorization": f"Bearer {_token(first)}"}
        with httpx.Client(base_url=first.base, headers=headers, timeout=10) as a, \
                httpx.Client(base_url=second_base, headers=headers, timeout=10) as b:
            yield a, b


def _token(live: LiveServer) -> str:
    response = httpx.post(live.oa2["tokenendpoint"], data={"grant_type": "client_credentials"},
                          auth=(live.oa2["clientid"], live.oa2["clientsecret"]), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def _queue(client: httpx.Client, name: str, attributes: dict | None = None) -> None:
    response = client.put(f"{MANAGEMENT}/queues/a%2Fb%2Fc%2F{name}", json=attributes or {})
    assert response.status_code in (200, 201), response.text


def _subscribe(client: httpx.Client, name: str) -> None:
    response = client.put(f"{MANAGEMENT}/queues/a%2Fb%2Fc%2F{name}/subscriptions/{TOPIC}")
    assert response.status_code in (200, 201), response.text


def _publish_topic(client: httpx.Client, body: bytes) -> None:
    response = client.post(f"{REST}/topics/{TOPIC}/messages", content=body,
                           headers={"Content-Type": "text/plain", "x-qos": "1"})
    assert response.status_code == 204, response.text


def _drain(client: httpx.Client, name: str) -> list[bytes]:
    bodies = []
    while (consumed := client.post(f"{REST}/queues/a%2Fb%2Fc%2F{name}/messages/consumption",
                                   headers={"x-qos": "0"})).status_code == 200:
        bodies.append(consumed.content)
    assert consumed.status_code == 204, consumed.text
    return bodies


def _eventually(check: Callable[[], bool]) -> float:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > PATIENCE:
            pytest.fail(f"the other process still served its old view after {PATIENCE} s")
        time.sleep(0.05)
    return time.monotonic() - began


def test_a_subscription_added_in_one_process_is_fanned_out_to_by_the_other(pair):
    a, b = pair
    _queue(a, "topo1")
    _queue(a, "topo2")
    _subscribe(a, "topo1")
    _publish_topic(b, b"first")  # b now caches: the topic reaches topo1 only
    assert _drain(a, "topo1") == [b"first"]
    _subscribe(a, "topo2")

    def reaches_topo2() -> bool:
        _publish_topic(b, b"probe")
        return b"probe" in _drain(a, "topo2")

    _eventually(reaches_topo2)


def test_a_subscription_removed_in_one_process_stops_the_other_fanning_out(pair):
    a, b = pair
    _queue(a, "topo3")
    _subscribe(a, "topo3")

    def reaches_topo3() -> bool:
        _publish_topic(b, b"before")
        return b"before" in _drain(a, "topo3")

    _eventually(reaches_topo3)
    removed = a.delete(f"{MANAGEMENT}/queues/a%2Fb%2Fc%2Ftopo3/subscriptions/{TOPIC}")
    assert removed.status_code == 204, removed.text

    def stopped() -> bool:
        _drain(a, "topo3")
        _publish_topic(b, b"after")
        return b"after" not in _drain(a, "topo3")

    _eventually(stopped)


def test_a_queue_limit_changed_in_one_process_is_enforced_by_the_other(pair):
    a, b = pair
    _queue(a, "topo4")
    messages = f"{REST}/queues/a%2Fb%2Fc%2Ftopo4/messages"
    twenty = b"x" * 20
    sent = b.post(messages, content=twenty, headers={"Content-Type": "text/plain", "x-qos": "1"})
    assert sent.status_code == 204, sent.text  # cached without a limit
    _queue(a, "topo4", {"maxMessageSizeInBytes": 10})

    def refused() -> bool:
        response = b.post(messages, content=twenty, headers={"Content-Type": "text/plain", "x-qos": "1"})
        assert response.status_code in (204, 413), response.text
        return response.status_code == 413

    _eventually(refused)
