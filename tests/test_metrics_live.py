"""/metrics on a live server, under uvicorn and Daphne: it reaches Django past the hot path,
and what the hot path publishes, claims and acknowledges reaches it through the server's
own background flush (MESH_METER_FLUSH_SECONDS), read back from the database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.test_live_server import MANAGEMENT, REST, SERVERS, LiveServer, live_server

Q = "a/b/c/metered"
LABELS = frozenset({("namespace", "a/b/c"), ("queue", Q)})


@pytest.fixture(scope="module", params=SERVERS)
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp(f"metrics-{request.param}"),
                     {"MESH_METER_FLUSH_SECONDS": "1", "MESH_METRICS_TOKEN": "scrape-me"},
                     server=request.param) as server:
        yield server


@pytest.fixture
def http(live: LiveServer) -> Iterator[httpx.Client]:
    oa2 = live.oa2
    token = httpx.post(oa2["tokenendpoint"], data={"grant_type": "client_credentials"},
                       auth=(oa2["clientid"], oa2["clientsecret"]), timeout=10).json()["access_token"]
    with httpx.Client(base_url=live.base, timeout=10, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def scrape(live: LiveServer, **headers: str) -> httpx.Response:
    return httpx.get(f"{live.base}/metrics", headers=headers, timeout=10)


def counters(live: LiveServer) -> dict[str, float]:
    response = scrape(live)  # from 127.0.0.1, allowed by default
    assert response.status_code == 200, response.text
    return {sample.name: sample.value for family in text_string_to_metric_families(response.text)
            for sample in family.samples if frozenset(sample.labels.items()) == LABELS}


def eventually(live: LiveServer, expected: dict[str, float]) -> dict[str, float]:
    deadline = time.monotonic() + 15
    while True:
        seen = counters(live)
        if all(seen.get(name) == value for name, value in expected.items()) or time.monotonic() > deadline:
            return seen
        time.sleep(0.3)


def test_hot_path_traffic_reaches_metrics_through_the_servers_flush(live, http):
    name = quote(Q, safe="")
    assert http.put(f"{MANAGEMENT}/queues/{name}").status_code == 201
    for body in (b"a", b"bb", b"ccc"):
        assert http.post(f"{REST}/queues/{name}/messages", content=body,
                         headers={"x-qos": "1", "Content-Type": "text/plain"}).status_code == 204
    consumed = http.post(f"{REST}/queues/{name}/messages/consumption", headers={"x-qos": "1"})
    assert consumed.status_code == 200
    ack = f"{REST}/queues/{name}/messages/{quote(consumed.headers['x-message-id'], safe='')}/acknowledgement"
    assert http.post(ack).status_code == 200
    expected = {
        "meshsite_messages_published_total": 3, "meshsite_messages_consumed_total": 1,
        "meshsite_messages_acknowledged_total": 1, "meshsite_queue_messages": 2, "meshsite_queue_bytes": 5,
        "meshsite_queue_unacknowledged_messages": 0,
    }
    seen = eventually(live, expected)
    assert {name: seen.get(name) for name in expected} == expected


def test_metrics_answer_the_token_and_refuse_a_wrong_one(live):
    assert scrape(live, Authorization="Bearer scrape-me").status_code == 200
    wrong = scrape(live, Authorization="Bearer nope")
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "unauthorized"
