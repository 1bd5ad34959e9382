"""Cross-app flows against a real Daphne process over real HTTP: the CLI makes the instance
and key, the key's own URLs are used as written, and what only a real ASGI server shows
(raw_path routing of percent-encoded names, the ASGI body-size guard) is checked end to end.

The server gets its own database so that it never sees the test database's transactions:
a SQLite file under a temporary MESH_VAR_DIR, or, when DATABASE_URL is set (CI on
PostgreSQL), a throwaway PostgreSQL database created here and dropped afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

BASE_DIR = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MAX_MESSAGE_SIZE = 1000
BODY_LIMIT = MAX_MESSAGE_SIZE + 64 * 1024
MANAGEMENT = "/hub/rest/api/v1/management/messaging"
REST = "/messagingrest/v1"


@dataclass
class LiveServer:
    base: str
    key: dict[str, Any]
    log: Path

    @property
    def oa2(self) -> dict[str, str]:
        return self.key["messaging"][1]["oa2"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


class PostgresDatabase:
    """A database of its own for the server, on the cluster DATABASE_URL points at."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = f"meshsite_live_{secrets.token_hex(6)}"

    def _admin(self) -> Any:
        import psycopg

        return psycopg.connect(self.url, dbname="postgres", autocommit=True)

    def create(self) -> str:
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return urlunsplit(urlsplit(self.url)._replace(path=f"/{self.name}"))

    def drop(self) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def wait_until_serving(base: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"daphne exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/api/schema/", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"daphne did not answer within 60 s:\n{log.read_text()}")


@contextmanager
def live_server(var_dir: Path, extra_env: dict[str, str] | None = None, *,
                collect_static: bool = False) -> Iterator[LiveServer]:
    """A migrated Daphne with one instance and key; with collect_static, its static files
    collected as in production (compressing them takes most of a minute on a busy machine,
    so only the tests of static files ask for it)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "MESH_MAX_REQUEST_BODY", "MESH_PUBLIC_URL",
                         "MESH_TOKEN_LIFETIME", "STATIC_ROOT", "DEBUG")}
    env.update(MESH_VAR_DIR=str(var_dir), MESH_MAX_MESSAGE_SIZE=str(MAX_MESSAGE_SIZE), MESH_PUBLIC_URL=base,
               DJANGO_SETTINGS_MODULE="meshsite.settings", **(extra_env or {}))
    database = PostgresDatabase(os.environ["DATABASE_URL"]) if os.environ.get("DATABASE_URL") else None
    process: subprocess.Popen | None = None
    log = var_dir / "daphne.log"
    try:
        if database is not None:
            env["DATABASE_URL"] = database.create()
        manage(env, "migrate", "--noinput")
        if collect_static:
            manage(env, "collectstatic", "--noinput")
        manage(env, "create_service", "event-mesh", "default", "live", "-c", '{"namespace": "a/b/c"}')
        key = json.loads(manage(env, "create_service_key", "live", "k1"))
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "meshsite.asgi:application"],
                cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_until_serving(base, process, log)
        yield LiveServer(base=base, key=key, log=log)
    finally:
        if process is not None:
            stop(process)
        if database is not None:
            database.drop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("live")) as server:
        yield server


@pytest.fixture(scope="module")
def token(live: LiveServer) -> str:
    # The CAP form, at the token endpoint exactly as the key names it.
    response = httpx.get(live.oa2["tokenendpoint"], params={"grant_type": "client_credentials",
                                                            "response_type": "token"},
                         auth=(live.oa2["clientid"], live.oa2["clientsecret"]), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@pytest.fixture
def http(live: LiveServer, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.key["messaging"][1]["uri"], timeout=10,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def test_key_urls_point_at_the_server(live):
    assert live.oa2["tokenendpoint"] == f"{live.base}/oauth/token"
    assert live.key["management"][0]["uri"] == live.base
    assert live.key["messaging"][0]["uri"] == live.base.replace("http://", "ws://") + "/protocols/amqp10ws"


def test_get_form_token_over_http_has_the_sap_shape(live):
    response = httpx.get(f"{live.base}/oauth/token", params={"grant_type": "client_credentials",
                                                             "response_type": "token"},
                         auth=(live.oa2["clientid"], live.oa2["clientsecret"]), timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 43200
    assert "refresh_token" not in body
    wrong = httpx.get(f"{live.base}/oauth/token", params={"grant_type": "client_credentials",
                                                          "response_type": "token"},
                      auth=(live.oa2["clientid"], "wrong"), timeout=10)
    assert wrong.status_code == 401
    assert "access_token" not in wrong.text


def test_api_without_or_with_bad_token_answers_401(live):
    assert httpx.get(f"{live.base}{MANAGEMENT}/queues", timeout=10).status_code == 401
    bad = httpx.get(f"{live.base}{MANAGEMENT}/queues", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert bad.status_code == 401
    assert "message" in bad.json()


def test_queue_publish_consume_ack_over_http(http):
    queue = f"{MANAGEMENT}/queues/a%2Fb%2Fc%2Flive%2Forders"
    created = http.put(queue)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "a/b/c/live/orders"
    assert http.put(queue).status_code == 200
    messages = f"{REST}/queues/a%2Fb%2Fc%2Flive%2Forders/messages"
    published = http.post(messages, content=b'{"id": 1}',
                          headers={"Content-Type": "application/json", "x-qos": "1"})
    assert published.status_code == 204, published.text
    consumed = http.post(f"{messages}/consumption", headers={"x-qos": "1"})
    assert consumed.status_code == 200, consumed.text
    assert consumed.content == b'{"id": 1}'
    assert consumed.headers["content-type"].startswith("application/json")
    message_id = consumed.headers["x-message-id"]
    assert http.post(f"{messages}/{message_id}/acknowledgement").status_code in (200, 204)
    assert http.post(f"{messages}/consumption", headers={"x-qos": "1"}).status_code == 204
    assert http.post(f"{messages}/{message_id}/acknowledgement").status_code in (404, 410)


def test_topic_publish_reaches_the_subscribed_queue_over_http(http):
    assert http.put(f"{MANAGEMENT}/queues/a%2Fb%2Fc%2Ffan").status_code == 201
    subscribed = http.put(f"{MANAGEMENT}/queues/a%2Fb%2Fc%2Ffan/subscriptions/a%2Fb%2Fc%2Fevents%2F%2B")
    assert subscribed.status_code == 201, subscribed.text
    assert subscribed.json() == {"queueName": "a/b/c/fan", "topicPattern": "a/b/c/events/+"}
    published = http.post(f"{REST}/topics/a%2Fb%2Fc%2Fevents%2Fcreated/messages", content=b"evt",
                          headers={"Content-Type": "text/plain", "x-qos": "0"})
    assert published.status_code == 204, published.text
    consumed = http.post(f"{REST}/queues/a%2Fb%2Fc%2Ffan/messages/consumption", headers={"x-qos": "0"})
    assert consumed.status_code == 200, consumed.text
    assert consumed.content == b"evt"


def test_encoded_and_unencoded_names_are_different_routes(http):
    assert http.put(f"{MANAGEMENT}/queues/a%2Fb%2Fc%2Fraw").status_code == 201
    # The decoded spelling has extra path segments; under raw_path routing it must not
    # reach the same queue (or create another one).
    assert http.put(f"{MANAGEMENT}/queues/a/b/c/raw2").status_code == 404
    assert http.get(f"{MANAGEMENT}/queues/a/b/c/raw").status_code == 404
    unencoded = http.post(f"{REST}/queues/a/b/c/raw/messages", content=b"x",
                          headers={"Content-Type": "text/plain", "x-qos": "0"})
    assert unencoded.status_code == 404
    names = {queue["name"] for queue in http.get(f"{MANAGEMENT}/queues").json()}
    assert "a/b/c/raw" in names and "a/b/c/raw2" not in names
    assert http.post(f"{REST}/queues/a%2Fb%2Fc%2Fraw/messages/consumption",
                     headers={"x-qos": "0"}).status_code == 204
    encoded = http.post(f"{REST}/queues/a%2Fb%2Fc%2Fraw/messages", content=b"x",
                        headers={"Content-Type": "text/plain", "x-qos": "0"})
    assert encoded.status_code == 204


def test_body_over_the_request_limit_gets_413_json(http):
    assert http.put(f"{MANAGEMENT}/queues/a%2Fb%2Fc%2Fbig").status_code == 201
    response = http.post(f"{REST}/queues/a%2Fb%2Fc%2Fbig/messages", content=b"x" * (BODY_LIMIT + 1),
                         headers={"Content-Type": "application/octet-stream", "x-qos": "0"})
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/json")
    assert str(BODY_LIMIT) in response.json()["message"]


def test_chunked_body_over_the_request_limit_gets_413_json(live, token):
    def chunks() -> Iterator[bytes]:
        for _ in range(BODY_LIMIT // 8192 + 2):
            yield b"x" * 8192

    with httpx.Client(base_url=live.base, timeout=10) as client:
        assert client.put(f"{MANAGEMENT}/queues/a%2Fb%2Fc%2Fchunked",
                          headers={"Authorization": f"Bearer {token}"}).status_code == 201
        response = client.post(f"{REST}/queues/a%2Fb%2Fc%2Fchunked/messages", content=chunks(),
                               headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain",
                                        "x-qos": "0"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert str(BODY_LIMIT) in response.json()["message"]


def test_body_limit_guards_every_path_not_only_messaging(live):
    response = httpx.post(f"{live.base}/oauth/token", content=b"grant_type=client_credentials&x=" + b"y" * BODY_LIMIT,
                          headers={"Content-Type": "application/x-www-form-urlencoded"},
                          auth=(live.oa2["clientid"], live.oa2["clientsecret"]), timeout=10)
    assert response.status_code == 413
    assert str(BODY_LIMIT) in response.json()["message"]


def test_message_over_the_message_size_under_the_body_limit_gets_413(http):
    assert http.put(f"{MANAGEMENT}/queues/a%2Fb%2Fc%2Fmid").status_code == 201
    messages = f"{REST}/queues/a%2Fb%2Fc%2Fmid/messages"
    headers = {"Content-Type": "application/octet-stream", "x-qos": "0"}
    too_big = http.post(messages, content=b"x" * (MAX_MESSAGE_SIZE + 1), headers=headers)
    assert too_big.status_code == 413
    assert "message" in too_big.json()
    assert http.post(messages, content=b"x" * MAX_MESSAGE_SIZE, headers=headers).status_code == 204


def test_server_keeps_serving_after_a_rejected_body(http):
    http.post(f"{REST}/queues/a%2Fb%2Fc%2Fbig/messages", content=b"x" * (BODY_LIMIT * 2),
              headers={"Content-Type": "text/plain", "x-qos": "0"})
    assert http.get(f"{MANAGEMENT}/queues").status_code == 200


def test_openapi_schema_is_served_with_the_sap_paths(live):
    response = httpx.get(f"{live.base}/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"},
                         timeout=10)
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        f"{REST}/queues/{{queue}}/messages",
        f"{REST}/queues/{{queue}}/messages/consumption",
        f"{REST}/queues/{{queue}}/messages/{{message_id}}/acknowledgement",
        f"{REST}/topics/{{topic}}/messages",
        f"{MANAGEMENT}/queues",
        f"{MANAGEMENT}/queues/{{queue}}",
        f"{MANAGEMENT}/queues/{{queue}}/subscriptions/{{topic}}",
    ):
        assert path in paths, sorted(paths)
    assert "post" in paths[f"{REST}/queues/{{queue}}/messages"]
    assert "put" in paths[f"{MANAGEMENT}/queues/{{queue}}"]


def test_api_docs_page_answers(live):
    response = httpx.get(f"{live.base}/api/docs/", timeout=10)
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert "/api/schema/" in response.text
