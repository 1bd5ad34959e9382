"""A Redis restart under a running Celery worker, for real: a private redis-server is
SIGKILLed while the worker is in the middle of a webhook push (the task unacknowledged in
Redis, as `task_acks_late` keeps it), and started again on the same port 3 s later, empty
(no persistence), as an operator's restart or a crashed container would leave it.

The same worker process must live through it and keep delivering: the push in flight
completes, messages published before the restart are not lost (PostgreSQL holds them, and
the sweep replaces the wake-ups Redis lost), and messages published after it reach the
receiver. Both pools the docs name are run: prefork (the default) and threads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from messaging.models import Message
from tests import test_webhook_worker
from tests.test_webhook_worker import (
    QUEUE,
    ROOT,
    Receiver,
    RedisServer,
    _celery_broker,
    _publish,
    _start_redis,
    _worker_env,
)

pytestmark = pytest.mark.django_db(transaction=True)

# That module's fixtures: a real HTTP receiver, and a client whose queue is pushed to it.
receiver = test_webhook_worker.receiver
client = test_webhook_worker.client

DOWN_SECONDS = 3.0  # how long Redis stays away, as in the report of the defect


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server that this test may kill: never the shared one."""
    if shutil.which("redis-server") is None and not django_settings.REDIS_URL:
        pytest.skip("redis-server is not on PATH (the embedded default needs no Redis)")
    server = _start_redis(tmp_path / "redis")
    try:
        with _celery_broker(server.url):
            yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()


def _restart_on_same_port(server: RedisServer, seconds_down: float) -> None:
    """SIGKILL the server (no shutdown, no save), and start a fresh, empty one on its port in
    its place (so that the fixture's teardown stops the new one)."""
    server.process.kill()
    server.process.wait(timeout=10)
    time.sleep(seconds_down)
    log = server.log.with_name("redis-restarted.log")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(server.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(server.log.parent)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    server.process, server.log = process, log
    deadline = time.monotonic() + 10
    while not server.is_ours():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.05)


@pytest.fixture
def worker_factory(tmp_path: Path, redis_server: RedisServer) -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the worker, its pool children and its beat
        process.wait(timeout=10)


def _start_worker(started: list[subprocess.Popen], tmp_path: Path, url: str, pool: str) -> subprocess.Popen:
    celery = str(Path(sys.executable).parent / "celery")
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [celery, "-A", "meshsite", "worker", "--beat", f"--pool={pool}", "--concurrency=4",
             "--loglevel=INFO", "--schedule", str(tmp_path / "beat-schedule")],
            cwd=ROOT, env=_worker_env(url), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown's kill takes the children too
        )
    started.append(process)
    return process


def _log(tmp_path: Path) -> str:
    return (tmp_path / "worker.log").read_text(errors="replace")[-6000:]


def _wait_for_pushes(server: Receiver, bodies: list[bytes], worker: subprocess.Popen, tmp_path: Path,
                     seconds: float) -> None:
    """Wait until every body has reached the receiver (by body: a message's row is gone once
    it is acknowledged), failing at once if the worker exits."""
    deadline = time.monotonic() + seconds
    while missing := set(bodies) - {push.body for push in server.pushes}:
        assert worker.poll() is None, f"the worker exited ({worker.returncode}):\n{_log(tmp_path)}"
        assert time.monotonic() < deadline, f"{len(missing)} not pushed within {seconds} s\n{_log(tmp_path)}"
        time.sleep(0.2)


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_worker_survives_a_redis_restart_mid_delivery_and_keeps_delivering(
    client, receiver, redis_server, worker_factory, tmp_path, settings, pool
):
    # Wake-ups inline, so that a publish's wake-up goes to the broker before the call returns.
    settings.MESH_WEBHOOK_WAKE_IN_BACKGROUND = False
    # The first push stalls past the restart, so a task is in flight (delivered, not
    # acknowledged) when Redis dies, and the worker has unacknowledged messages to restore.
    receiver.replies = [(200, DOWN_SECONDS + 1.5)]
    worker = _start_worker(worker_factory, tmp_path, redis_server.url, pool)
    pid = worker.pid

    before = [f"before the restart {n}".encode() for n in range(5)]
    _publish(client, before[:1])
    first = receiver.wait_for(1, 30)
    assert len(first) == 1, _log(tmp_path)  # the push is in flight, the receiver holds it
    _publish(client, before[1:])

    _restart_on_same_port(redis_server, DOWN_SECONDS)
    _wait_for_pushes(receiver, before, worker, tmp_path, 25)
    # Once nothing is left, a new publish needs a task through the restarted Redis.
    deadline = time.monotonic() + 10
    while Message.objects.filter(queue__name=QUEUE).exists():
        assert worker.poll() is None and time.monotonic() < deadline, _log(tmp_path)
        time.sleep(0.2)

    after = [f"after the restart {n}".encode() for n in range(5)]
    _publish(client, after)
    _wait_for_pushes(receiver, after, worker, tmp_path, 25)

    assert worker.poll() is None and worker.pid == pid, _log(tmp_path)  # the same worker, alive
    assert "Unrecoverable error" not in _log(tmp_path)
    pushed = [push.body for push in receiver.pushes]
    assert set(pushed) == set(before + after)  # every message, and nothing else
    # The push in flight at the restart completed (200) and was acknowledged: the only
    # message pushed twice, if any, is that one (its claim ran out with the old task's lease).
    assert {body for body in pushed if pushed.count(body) > 1} <= {before[0]}
