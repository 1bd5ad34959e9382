"""The failed-authentication limit over real HTTP against a Daphne process, with its counts in
a Redis of the test's own: the 429 a server answers, and counts that another process sees."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from meshsite.platform import ratelimit
from tests.test_live_server import LiveServer, free_port, live_server, stop


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                stop(process)
                pytest.fail("redis-server did not start")
            time.sleep(0.1)
    yield url
    stop(process)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, private_redis: str) -> Iterator[LiveServer]:
    limits = {"REDIS_URL": private_redis, "MESH_TOKEN_FAILURES_PER_CLIENT": "2",
              "MESH_TOKEN_FAILURES_PER_ADDRESS": "4", "MESH_TOKEN_FAILURE_WINDOW": "60"}
    with live_server(Path(tmp_path_factory.mktemp("live")), limits) as live:
        yield live


def get_token(live: LiveServer, secret: str, client_id: str | None = None) -> httpx.Response:
    return httpx.post(f"{live.base}/oauth/token", data={"grant_type": "client_credentials"},
                      auth=(client_id or live.oa2["clientid"], secret), timeout=10)


def test_server_answers_429_with_retry_after_and_counts_in_the_shared_cache(server, private_redis, settings):
    assert [get_token(server, "wrong").status_code for _ in range(2)] == [401, 401]
    refused = get_token(server, "wrong")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["error"] == "invalid_client" and refused.json()["error_description"]
    assert get_token(server, server.oa2["clientsecret"]).status_code == 200  # its owner is not locked out

    # The server process counted 3 failures from 127.0.0.1 in the Redis; this process reads them.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": private_redis, "KEY_PREFIX": "meshsite"}}
    settings.MESH_TOKEN_FAILURES_PER_ADDRESS = 3
    assert ratelimit.address_refusal("127.0.0.1") is not None
    assert ratelimit.address_refusal("127.0.0.2") is None

    # And a count this process adds is one the server obeys: the address is now past 4.
    ratelimit.failure_record(client_id="sb-elsewhere", address="127.0.0.1")
    blocked: Any = get_token(server, server.oa2["clientsecret"])
    assert blocked.status_code == 429 and blocked.json()["error"] == "temporarily_unavailable"
