"""Event Mesh to Process Visibility, for real: a live server and a Celery worker on its database
and broker; the CLI makes an Event Mesh instance and a Process Visibility instance with a
PVEventSender key; a queue subscribed to a topic gets a webhook whose endpoint is the key's
events URL and whose securitySchema is oauth2 with the key's own credentials. An event
published to the topic over REST is handshaken, pushed, authorised and stored as an Event of
the Process Visibility instance (and of no other), and the beat job folds it into a process
instance of the active scenario, which the workspace API answers; a batch in one message
then adds its new events and replaces the one whose eventId was sent before, and the
instances follow; a bad event is refused with 400 on every retry and shows in the monitor
once, with its payload.

Runs on whatever the suite runs on: the server's own SQLite file, or (DATABASE_URL set, as
in CI) a throwaway PostgreSQL database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshsite.testing import enc
from tests.test_live_server import MANAGEMENT, REST, LiveServer, live_server, manage, stop

ROOT = Path(__file__).resolve().parent.parent
QUEUE, TOPIC = "a/b/c/pv-feed", "a/b/c/orders/events"
WAIT_SECONDS = 60  # an upper bound for the worker on a busy machine, not a timing


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, Any]]]:
    """The live server (uvicorn), its worker with beat, and the PV key."""
    directory = tmp_path_factory.mktemp("mesh-to-pv")
    env = {"MESH_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", "MESH_SWEEP_INTERVAL": "1",
           "MESH_WEBHOOK_RETRY_SCHEDULE": "0.5", "MESH_PV_PROCESSING_INTERVAL": "1"}
    with live_server(directory, env) as server:
        manage(server.env, "create_service", "process-visibility", "standard", "pv1")
        pv_key = json.loads(manage(server.env, "create_service_key", "pv1", "k", "-c",
                                   json.dumps({"roles": ["PVEventSender"]})))
        ops_key = json.loads(manage(server.env, "create_service_key", "pv1", "ops", "-c",
                                    json.dumps({"roles": ["PVDeveloper", "PVOperator"]})))
        pv_key["ops"] = ops_key["uaa"]
        with (directory / "worker.log").open("wb") as out:
            worker = subprocess.Popen(
                [str(Path(sys.executable).parent / "celery"), "-A", "meshsite", "worker", "--beat", "--schedule",
                 str(directory / "celerybeat-schedule"), "--pool=threads", "--concurrency=2", "--loglevel=WARNING"],
                cwd=ROOT, env=server.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield server, pv_key
        finally:
            stop(worker)


def mesh_token(server: LiveServer) -> str:
    answer = httpx.post(server.oa2["tokenendpoint"], data={"grant_type": "client_credentials"},
                        auth=(server.oa2["clientid"], server.oa2["clientsecret"]), timeout=30)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


ORDERS = {
    "name": "Orders",
    "participants": [{"processDefinitionId": "order", "name": "Order",
                      "events": [{"eventType": "CREATED", "name": "Created"},
                                 {"eventType": "SHIPPED", "name": "Shipped"}]}],
    "context": [{"id": "AMOUNT", "name": "Amount", "type": "Number"}],
    "state": {"completingEvents": [{"participant": "order", "eventType": "SHIPPED"}]},
    "indicators": [],
}


def scenario_activated(server: LiveServer, uaa: dict[str, str]) -> dict[str, str]:
    """The Orders scenario, created and activated through the scenario API; the ops key's auth."""
    answer = httpx.post(uaa["tokenendpoint"], data={"grant_type": "client_credentials"},
                        auth=(uaa["clientid"], uaa["clientsecret"]), timeout=30)
    auth = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    api = f"{server.base}/api/v1/pv/scenarios"
    created = httpx.post(api, json={"id": "orders", "name": "Orders", "definition": ORDERS}, headers=auth, timeout=30)
    assert created.status_code == 201, created.text
    activated = httpx.post(f"{api}/orders/activate", headers=auth, timeout=30)
    assert activated.status_code == 200, activated.text
    return auth


def wait_for_instances(server: LiveServer, auth: dict[str, str], expected: dict[str, str]) -> None:
    """Until the workspace API lists these process instances (label -> state)."""
    deadline = time.monotonic() + WAIT_SECONDS
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        answer = httpx.get(f"{server.base}/api/v1/pv/scenarios/orders/instances", headers=auth, timeout=30)
        assert answer.status_code == 200, answer.text
        seen = {row["label"]: row["state"] for row in answer.json()["instances"]}
        if seen == expected:
            return
        time.sleep(0.5)
    log = (server.log.parent / "worker.log").read_text(errors="replace")[-3000:]
    pytest.fail(f"the instances never became {expected}; last seen {seen}\nworker log:\n{log}")


def stored_events(server: LiveServer) -> list[dict[str, Any]]:
    code = ("import json; from visibility.models import Event; print(json.dumps(list(Event.objects.values("
            "'instance__name', 'event_id', 'definition_id', 'process_instance_id', 'event_type', 'context'))))")
    return json.loads(manage(server.env, "shell", "-c", code).strip().splitlines()[-1])


def wait_for_events(server: LiveServer, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        events = stored_events(server)
        if len(events) >= count:
            return events
        time.sleep(1)
    log = (server.log.parent / "worker.log").read_text(errors="replace")[-3000:]
    pytest.fail(f"{count} events never arrived; stored: {stored_events(server)}\nworker log:\n{log}")


def test_an_event_published_to_a_topic_reaches_process_visibility_through_a_webhook(flow):
    server, pv_key = flow
    ops = scenario_activated(server, pv_key["ops"])
    auth = {"Authorization": f"Bearer {mesh_token(server)}"}
    assert httpx.put(f"{server.base}{MANAGEMENT}/queues/{enc(QUEUE)}", headers=auth).status_code in (200, 201)
    assert httpx.put(f"{server.base}{MANAGEMENT}/queues/{enc(QUEUE)}/subscriptions/{enc(TOPIC)}",
                     headers=auth).status_code in (200, 201)
    uaa = pv_key["uaa"]
    webhook = {"name": "to-pv", "address": f"queue:{QUEUE}", "qos": 1, "pushConfig": {
        "type": "webhook", "endpoint": pv_key["endpoints"]["events"],
        "securitySchema": {"type": "oauth2", "grantType": "client_credentials", "clientId": uaa["clientid"],
                           "clientSecret": uaa["clientsecret"], "tokenUrl": uaa["tokenendpoint"]}}}
    created = httpx.post(f"{server.base}{REST}/subscriptions", json=webhook, headers=auth, timeout=30)
    assert created.status_code == 201, created.text

    event = {"eventId": "order-1-created", "processDefinitionId": "order", "processInstanceId": 3567,
             "eventType": "CREATED", "timestamp": "2024-05-01T10:00:00Z", "context": {"AMOUNT": 120.5}}
    published = httpx.post(f"{server.base}{REST}/topics/{enc(TOPIC)}/messages", content=json.dumps(event),
                           headers={**auth, "x-qos": "1", "Content-Type": "application/json"}, timeout=30)
    assert published.status_code == 204, published.text

    [stored] = wait_for_events(server, 1)
    assert stored == {"instance__name": "pv1", "event_id": "order-1-created", "definition_id": "order",
                      "process_instance_id": "3567", "event_type": "CREATED", "context": {"AMOUNT": 120.5}}
    handshake = httpx.get(f"{server.base}{REST}/subscriptions/to-pv", headers=auth, timeout=30).json()
    assert handshake["handshakeStatus"] == "Succeeded", handshake  # our OPTIONS answer passed
    wait_for_instances(server, ops, {"3567": "open"})  # folded by the beat job, nobody asked

    # A batch in one message: the repeated eventId replaces the event, the others are new.
    batch = [{**event, "eventType": "SHIPPED"}, {**event, "eventId": "order-2-created", "processInstanceId": "A-2"},
             {**event, "eventId": None, "processInstanceId": "A-3"}]
    published = httpx.post(f"{server.base}{REST}/topics/{enc(TOPIC)}/messages", content=json.dumps(batch),
                           headers={**auth, "x-qos": "1", "Content-Type": "application/json"}, timeout=30)
    assert published.status_code == 204, published.text
    events = {(e["event_id"], e["process_instance_id"]): e["event_type"] for e in wait_for_events(server, 3)}
    assert events == {("order-1-created", "3567"): "SHIPPED", ("order-2-created", "A-2"): "CREATED",
                      (None, "A-3"): "CREATED"}
    wait_for_instances(server, ops, {"3567": "completed", "A-2": "open", "A-3": "open"})

    # A bad event is answered 400 on every retry, and the monitor shows it once, with its payload.
    bad = {**event, "eventId": "order-3", "timestamp": "yesterday"}
    published = httpx.post(f"{server.base}{REST}/topics/{enc(TOPIC)}/messages", content=json.dumps(bad),
                           headers={**auth, "x-qos": "1", "Content-Type": "application/json"}, timeout=30)
    assert published.status_code == 204, published.text
    refused = wait_for_attempts(server, auth, status=400, count=3)
    assert "timestamp" in (refused[0]["responseExcerpt"] or "")
    [failure] = open_failures(server)
    assert failure["reason"] == "wrong_type" and failure["field"] == "timestamp" and json.loads(failure["raw"]) == bad
    assert len(stored_events(server)) == 3


def open_failures(server: LiveServer) -> list[dict[str, Any]]:
    code = ("import json; from visibility.models import IngestFailure; print(json.dumps(list("
            "IngestFailure.objects.filter(state='open').values('reason', 'field', 'raw'))))")
    return json.loads(manage(server.env, "shell", "-c", code).strip().splitlines()[-1])


def wait_for_attempts(server: LiveServer, auth: dict[str, str], *, status: int, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        log = httpx.get(f"{server.base}{REST}/subscriptions/to-pv/deliveries", headers=auth, timeout=30).json()
        matching = [attempt for attempt in log if attempt["statusCode"] == status]
        if len(matching) >= count:
            return matching
        time.sleep(0.5)
    pytest.fail(f"fewer than {count} pushes answered {status}: {log}")
