"""The background worker for real: a Celery worker with the beat scheduler embedded, on the
configured broker (Redis in CI, the file-system broker on the embedded default), sweeps an
expired message into the dead message queue of the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from meshsite.testing import make_instance, mesh_client_for
from messaging.models import Message

ROOT = Path(__file__).resolve().parent.parent


def _database_url() -> str:
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    return f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"


@pytest.fixture
def worker(tmp_path: Path):
    env = {**os.environ, "DATABASE_URL": _database_url(), "MESH_SWEEP_INTERVAL": "1", "MESH_VAR_DIR": str(tmp_path)}
    celery = str(Path(sys.executable).parent / "celery")
    process = subprocess.Popen(
        [celery, "-A", "meshsite", "worker", "--beat", "--pool=solo", "--loglevel=WARNING",
         "--schedule", str(tmp_path / "beat-schedule")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    yield process
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.django_db(transaction=True)
def test_worker_beat_sweeps_expired_message_into_dead_message_queue(worker, fast_hashing):
    client = mesh_client_for(make_instance())
    client.put_queue("a/b/c/q", {"respectTtl": True, "deadMsgQueue": "$namespace/dmq"})
    assert client.publish("queues", "a/b/c/q", b"short-lived", headers={"x-message-expiration": "1"}).status_code == 204

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = Message.objects.select_related("queue").get()
        if message.queue.name == "a/b/c/dmq":
            break
        assert worker.poll() is None, worker.stdout.read().decode() if worker.stdout else ""
        time.sleep(0.5)
    assert message.queue.name == "a/b/c/dmq"
    assert message.death_reason == "message expired (respectTtl)"
    assert message.dead_from == "a/b/c/q"
