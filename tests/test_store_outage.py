"""With the database unreachable, a real server answers 503 with Retry-After on every API
(a retryable condition for clients), never a 500, and never pretends a publish succeeded."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "/messagingrest/v1/queues/a%2Fb%2Fc%2Fq/messages"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_without_store(tmp_path_factory):
    dead_port = _free_port()  # nothing listens here: every connection is refused
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{dead_port}/meshsite",
        "DATABASE_POOL_TIMEOUT": "1",
        "MESH_VAR_DIR": str(tmp_path_factory.mktemp("var")),
    }
    env.pop("REDIS_URL", None)
    port = _free_port()
    daphne = str(Path(sys.executable).parent / "daphne")
    process = subprocess.Popen(
        [daphne, "-b", "127.0.0.1", "-p", str(port), "-v", "0", "meshsite.asgi:application"],
        cwd=ROOT, env=env, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(base + "/api/schema/", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/hub/rest/api/v1/management/messaging/readinessCheck", {}),
        ("POST", QUEUE, {"x-qos": "1", "Content-Type": "text/plain"}),
        ("POST", QUEUE + "/consumption", {"x-qos": "1"}),
    ],
    ids=["readiness", "publish", "consume"],
)
def test_api_answers_503_with_retry_after_when_the_store_is_down(server_without_store, method, path, headers):
    response = httpx.request(
        method, server_without_store + path, headers={"Authorization": "Bearer some-token", **headers},
        content=b"payload" if method == "POST" else None, timeout=15,
    )
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert "message" in response.json()


def test_token_endpoint_answers_503_when_the_store_is_down(server_without_store):
    response = httpx.post(
        server_without_store + "/oauth/token", data={"grant_type": "client_credentials"},
        auth=("sb-client", "secret"), timeout=15,
    )
    assert response.status_code == 503, response.text
    assert response.json() == {"error": "temporarily_unavailable"}
    assert response.headers["Retry-After"] == "5"
