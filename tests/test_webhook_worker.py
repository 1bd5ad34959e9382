"""Webhook push delivery under faults, for real: a Celery worker subprocess with beat embedded
(on the configured broker: Redis in CI, the file-system broker on the embedded default) pushes
from the test database to a real HTTP receiver on 127.0.0.1.

Pushes are woken after the publish commits; a wake-up lost with the broker's contents is
replaced by the sweep; a worker killed mid-push holds its claim and lease until they run
out, and then a new worker delivers the message; a 500 is retried after the backoff until
the receiver accepts, and the delivery log shows every attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone
from redis import Redis

from meshsite.testing import REST, MeshClient
from messaging.models import DeliveryAttempt, Message, WebhookSubscription

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "a/b/c/q1"
HOOK = "a/b/c/hook1"
pytestmark = pytest.mark.django_db(transaction=True)


@dataclass(frozen=True)
class Push:
    body: bytes
    headers: dict[str, str]  # names lower-cased
    at: datetime

    @property
    def message_id(self) -> str:
        return self.headers["x-message-id"]


class Receiver(ThreadingHTTPServer):
    """Records every POST; `replies` scripts the next answers as (status, seconds to stall
    before answering); once they are used up it answers 200 at once."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), PushHandler)
        self.pushes: list[Push] = []
        self.replies: list[tuple[int, float]] = []
        self.changed = threading.Condition()
        self.released = threading.Event()  # ends every stall (teardown)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def record(self, push: Push) -> tuple[int, float]:
        with self.changed:
            self.pushes.append(push)
            self.changed.notify_all()
            return self.replies.pop(0) if self.replies else (200, 0.0)

    def wait_for(self, count: int, seconds: float) -> list[Push]:
        with self.changed:
            self.changed.wait_for(lambda: len(self.pushes) >= count, seconds)
            return list(self.pushes)


class PushHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, stall = self.server.record(Push(body, headers, timezone.now()))
        self.server.released.wait(stall)
        try:
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        except OSError:  # the worker gave up or was killed while we stalled
            pass

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Worker:
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL the whole process group (the worker and its embedded beat): no cleanup runs."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def assert_alive(self) -> None:
        assert self.process.poll() is None, f"the worker exited:\n{self.output()}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@dataclass
class Workers:
    tmp_path: Path
    started: list[Worker] = field(default_factory=list)

    def start(self, **env: str) -> Worker:
        n = len(self.started)
        log = self.tmp_path / f"worker-{n}.log"
        celery = str(Path(sys.executable).parent / "celery")
        with log.open("wb") as out:
            process = subprocess.Popen(
                [celery, "-A", "meshsite", "worker", "--beat", "--pool=solo", "--loglevel=WARNING",
                 "--schedule", str(self.tmp_path / f"beat-schedule-{n}")],
                cwd=ROOT, env={**_worker_env(), **env}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so a kill takes the beat child too
            )
        worker = Worker(process, log)
        self.started.append(worker)
        return worker

    def output(self) -> str:
        return "\n".join(f"--- worker {n}:\n{w.output()}" for n, w in enumerate(self.started))


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        # The same busy timeout and IMMEDIATE transactions as the embedded default, which a
        # bare sqlite:// URL would not give: two processes write this file.
        return f"sqlite:///{db['NAME']}?timeout=30&transaction_mode=IMMEDIATE"
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def _worker_env() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": _database_url(),
        # The test process's own var dir: without REDIS_URL the file-system broker lives
        # there, and the wake-ups the test process sends after a publish must reach the worker.
        "MESH_VAR_DIR": str(django_settings.VAR_DIR),
        "MESH_SWEEP_INTERVAL": "1",
        "MESH_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "MESH_WEBHOOK_RETRY_SCHEDULE": "0.2",
        "MESH_WEBHOOK_TIMEOUT": "5",
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.released.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    yield started
    for worker in started.started:
        worker.kill()  # a warm shutdown waits seconds for the embedded beat; nothing here needs one


@pytest.fixture
def client(mesh: Callable[..., MeshClient], settings, receiver: Receiver) -> MeshClient:
    """A key of an instance whose queue is pushed to the receiver, without a handshake."""
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    client = mesh()
    assert client.put_queue(QUEUE).status_code == 201
    body = {"name": HOOK, "address": f"queue:{QUEUE}", "qos": 1,
            "pushConfig": {"type": "webhook", "endpoint": receiver.url, "exemptHandshake": True}}
    response = client.call("POST", f"{REST}/subscriptions", json.dumps(body), content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["handshakeStatus"] == "Exempted"
    return client


def _publish(client: MeshClient, bodies: list[bytes]) -> None:
    for body in bodies:
        assert client.publish("queues", QUEUE, body).status_code == 204


def _wait_until(condition: Callable[[], bool], seconds: float, workers: Workers, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        for worker in workers.started:
            if worker.process.returncode is None:  # not one this test killed
                worker.assert_alive()
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s\n{workers.output()}"
        time.sleep(0.2)


def _queue_empty() -> bool:
    return not Message.objects.filter(queue__name=QUEUE).exists()


def _by_id(pushes: list[Push]) -> dict[str, Push]:
    return {push.message_id: push for push in pushes}


def _drop_queued_wakeups() -> int:
    """Throw away every task waiting in the broker, as a Redis restart without persistence or
    a lost broker volume would; returns how many were waiting. FLUSHDB, not FLUSHALL: only the
    database REDIS_URL names is the mesh's to lose."""
    redis_url = django_settings.REDIS_URL
    if redis_url:
        redis = Redis.from_url(redis_url)
        waiting = int(redis.llen("celery"))
        redis.flushdb()
        return waiting
    inbox = Path(django_settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
    files = [path for path in inbox.iterdir() if path.is_file()]
    for path in files:
        path.unlink()
    return len(files)


def test_published_messages_are_pushed_by_the_worker_woken_after_commit(client, receiver, workers):
    # A sweep interval longer than the test: only the wake-ups sent after each publish
    # commits can start the deliveries.
    worker = workers.start(MESH_SWEEP_INTERVAL="3600")
    bodies = [f"message {n}".encode() for n in range(20)]
    _publish(client, bodies)
    published = {str(uuid): bytes(payload) for uuid, payload in Message.objects.values_list("uuid", "payload")}
    assert len(published) == 20

    pushes = receiver.wait_for(20, 30)
    assert len(pushes) == 20, f"{len(pushes)} of 20 pushed\n{worker.output()}"
    _wait_until(_queue_empty, 10, workers, "every push acknowledged")
    assert sorted(push.message_id for push in pushes) == sorted(published)  # each exactly once
    for push in pushes:
        assert push.body == published[push.message_id]
        assert push.headers["x-address"] == f"queue:{QUEUE}"
        assert push.headers["x-qos"] == "1"
        assert push.headers["content-type"] == "text/plain"
    assert [push.body for push in pushes] == bodies  # one runner per subscription keeps queue order
    assert DeliveryAttempt.objects.filter(succeeded=True).count() == 20
    assert not DeliveryAttempt.objects.filter(succeeded=False).exists()


def test_lost_wakeups_are_replaced_by_the_sweep(client, receiver, workers):
    bodies = [f"while no worker ran {n}".encode() for n in range(5)]
    _publish(client, bodies)
    assert _drop_queued_wakeups() >= 5  # the wake-ups were sent, and are gone now
    ids = {str(uuid) for uuid in Message.objects.values_list("uuid", flat=True)}

    started = time.monotonic()
    worker = workers.start()
    pushes = receiver.wait_for(5, 25)
    assert set(_by_id(pushes)) == ids, worker.output()
    assert len(pushes) == 5
    # Worker start-up (a few seconds) plus a few 1 s sweep intervals.
    assert time.monotonic() - started < 20
    _wait_until(_queue_empty, 10, workers, "every push acknowledged")
    assert sorted(push.body for push in pushes) == sorted(bodies)


def test_message_held_by_a_killed_worker_is_delivered_once_its_claim_and_lease_run_out(
    client, receiver, workers
):
    # The first push stalls; the worker is SIGKILLed while it waits for the answer, so it
    # never settles: the claim on the message and the runner lease on the subscription stay
    # until they expire (MESH_WEBHOOK_TIMEOUT + 30 s = 32 s). That is waited out honestly.
    receiver.replies = [(200, 60.0)]
    first = workers.start(MESH_WEBHOOK_TIMEOUT="2")
    _publish(client, [b"survives a dead worker"])
    pushes = receiver.wait_for(1, 30)
    assert len(pushes) == 1, first.output()
    first.kill()

    message = Message.objects.get()
    subscription = WebhookSubscription.objects.get()
    now = timezone.now()
    assert message.delivery_count == 1
    assert message.locked_until is not None and message.locked_until > now
    assert subscription.runner_until is not None and subscription.runner_until > now
    lease_end = max(message.locked_until, subscription.runner_until)

    second = workers.start(MESH_WEBHOOK_TIMEOUT="2")
    seconds_left = (lease_end - now).total_seconds()
    pushes = receiver.wait_for(2, seconds_left + 20)
    assert len(pushes) == 2, second.output()
    assert pushes[1].message_id == pushes[0].message_id == str(message.uuid)
    assert pushes[1].body == b"survives a dead worker"
    assert pushes[1].at >= lease_end  # nobody pushed while the dead worker's claim and lease stood
    _wait_until(_queue_empty, 10, workers, "the redelivery acknowledged")
    attempts = list(DeliveryAttempt.objects.values_list("message_uuid", "succeeded", "status_code"))
    assert attempts == [(message.uuid, True, 200)]  # the killed push left no record
    second.assert_alive()


def test_receiver_failing_twice_gets_the_message_on_the_third_attempt(client, receiver, workers):
    receiver.replies = [(500, 0.0), (500, 0.0)]
    workers.start()
    _publish(client, [b"third time lucky"])
    message = Message.objects.get()

    pushes = receiver.wait_for(3, 25)
    assert len(pushes) == 3, workers.output()
    assert {push.message_id for push in pushes} == {str(message.uuid)}
    assert {push.body for push in pushes} == {b"third time lucky"}
    _wait_until(_queue_empty, 10, workers, "the successful push acknowledged")
    log = list(
        DeliveryAttempt.objects.filter(message_uuid=message.uuid)
        .order_by("attempted_at", "pk").values_list("succeeded", "status_code", "error")
    )
    assert log == [(False, 500, "receiver answered 500"), (False, 500, "receiver answered 500"), (True, 200, "")]
    subscription = WebhookSubscription.objects.get()
    assert subscription.consecutive_failures == 0
    assert subscription.next_attempt_at is None
    assert subscription.status == "Active"
    assert subscription.last_failed_delivery_reason == "receiver answered 500"
    assert subscription.last_successful_delivery is not None

