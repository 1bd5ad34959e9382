"""Webhook push delivery under faults, for real: a Celery worker subprocess with beat embedded
pushes from the test database to a real HTTP receiver on 127.0.0.1. With REDIS_URL set (CI)
the broker is a private redis-server each test starts on a free port, which the worker and
the test process's own wake-ups both use, so that a test may FLUSHALL it without touching
anyone else's data; on the embedded default it is the file-system broker under the var dir.

Pushes are woken after the publish commits; wake-ups lost to a FLUSHALL (or, on the embedded
default, to deleted broker files) are replaced by the sweep; a worker killed mid-push holds
its claim and lease until they run out, and then a new worker delivers the message; a 500 is
retried after the backoff until the receiver accepts, and the delivery log shows every attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
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
from kombu import Connection, pools
from kombu.utils.collections import eqhash
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from meshsite import celery_app
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
    redis_url: str | None  # the private broker, or None for the file-system broker
    started: list[Worker] = field(default_factory=list)

    def start(self, **env: str) -> Worker:
        n = len(self.started)
        log = self.tmp_path / f"worker-{n}.log"
        celery = str(Path(sys.executable).parent / "celery")
        with log.open("wb") as out:
            process = subprocess.Popen(
                [celery, "-A", "meshsite", "worker", "--beat", "--pool=solo", "--loglevel=WARNING",
                 "--schedule", str(self.tmp_path / f"beat-schedule-{n}")],
                cwd=ROOT, env={**_worker_env(self.redis_url), **env}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so a kill takes the beat child too
            )
        worker = Worker(process, log)
        self.started.append(worker)
        return worker

    def output(self) -> str:
        return "\n".join(f"--- worker {n}:\n{w.output()}" for n, w in enumerate(self.started))


@dataclass
class RedisServer:
    """A redis-server subprocess of this test's own, with no persistence: FLUSHALL is safe here."""

    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def is_ours(self) -> bool:
        """Whether the server on the port is this process: never flush a server that took the
        port first while ours failed to bind it."""
        if self.process.poll() is not None:
            return False
        try:
            return int(self.client().info("server")["process_id"]) == self.process.pid
        except RedisConnectionError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis(directory: Path) -> RedisServer:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("REDIS_URL is set, and these tests need redis-server on PATH for a private broker")
    directory.mkdir()
    for attempt in range(3):  # the free port may be taken before redis-server binds it: try another
        log = directory / f"redis-{attempt}.log"
        port = _free_port()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(directory)],
                stdout=out, stderr=subprocess.STDOUT,
            )
        server = RedisServer(process, port, log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            if server.is_ours():
                return server
            time.sleep(0.05)
        server.stop()
    pytest.fail(f"could not start a private redis-server:\n{log.read_text(errors='replace')[-2000:]}")


def _forget_pools(connection: Connection) -> None:
    """Close kombu's producer and connection pools for this broker and drop them from its
    process-wide registries, which key them by host and port: a later test's private server
    may get the same port, and must not be handed a closed pool."""
    for group in (pools.producers, pools.connections):
        if eqhash(connection) in group:
            group[connection].force_close_all()
            del group[connection]


@contextlib.contextmanager
def _celery_broker(url: str) -> Iterator[None]:
    """Point the test process's Celery app, which sends the wake-ups after a publish commits,
    at `url`, and afterwards back: its pools were made for the configured broker and are kept
    aside, not closed, so later tests find the app as it was."""
    assert celery_app.conf.broker_url  # reading a key loads the lazy configuration: `changes` is then its own
    changes = celery_app.conf.changes
    before = changes.get("broker_url")
    kept = celery_app._pool, celery_app.amqp._producer_pool
    changes["broker_url"] = url
    celery_app._pool = celery_app.amqp._producer_pool = None
    try:
        # CELERY_BROKER_URL / CELERY_BROKER_WRITE_URL in the environment would win over conf.
        assert celery_app.conf.broker_write_url == url, "the broker URL is overridden from the environment"
        yield
    finally:
        _forget_pools(celery_app.connection_for_write())
        if before is None:
            del changes["broker_url"]
        else:
            changes["broker_url"] = before
        celery_app._pool, celery_app.amqp._producer_pool = kept


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        # The same busy timeout and IMMEDIATE transactions as the embedded default, which a
        # bare sqlite:// URL would not give: two processes write this file.
        return f"sqlite:///{db['NAME']}?timeout=30&transaction_mode=IMMEDIATE"
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def _worker_env(redis_url: str | None) -> dict[str, str]:
    return {
        **os.environ,
        **({"REDIS_URL": redis_url} if redis_url else {}),
        "DATABASE_URL": _database_url(),
        # The test process's own var dir: without REDIS_URL the file-system broker lives
        # there, and the wake-ups the test process sends after a publish must reach the worker.
        "MESH_VAR_DIR": str(django_settings.VAR_DIR),
        "MESH_SWEEP_INTERVAL": "1",
        "MESH_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "MESH_WEBHOOK_RETRY_SCHEDULE": "0.2",
        "MESH_WEBHOOK_TIMEOUT": "5",
    }


@pytest.fixture(autouse=True)
def broker(tmp_path: Path) -> Iterator[RedisServer | None]:
    """With REDIS_URL set, a private redis-server for the workers and for the wake-ups this
    process sends; autouse, so it is in place before any fixture publishes, and gone after
    the workers are. None on the embedded default (the file-system broker)."""
    if not django_settings.REDIS_URL:
        yield None
        return
    server = _start_redis(tmp_path / "redis")
    try:
        with _celery_broker(server.url):
            yield server
    finally:
        server.stop()


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
def workers(tmp_path: Path, broker: RedisServer | None) -> Iterator[Workers]:
    started = Workers(tmp_path, broker.url if broker else None)
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


def _drop_queued_wakeups(broker: RedisServer | None) -> int:
    """Throw away every task waiting in the broker, as a Redis restart without persistence or
    a lost broker volume would; returns how many were waiting. With Redis: FLUSHALL on this
    test's private server (the kombu bindings go too); else the file-system broker's files."""
    if broker is not None:
        assert broker.is_ours()
        redis = broker.client()
        waiting = int(redis.llen("celery"))
        redis.flushall()
        assert redis.dbsize() == 0 and not redis.info("keyspace"), "FLUSHALL left keys behind"
        return waiting
    assert not django_settings.REDIS_URL, "with REDIS_URL set, the broker fixture starts a private server"
    inbox = Path(django_settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
    files = [path for path in inbox.iterdir() if path.is_file()]
    for path in files:
        path.unlink()
    return len(files)


def test_published_messages_are_pushed_by_the_worker_woken_after_commit(client, receiver, workers, settings):
    # A sweep interval longer than the test: only the wake-ups sent after each publish
    # commits -- by the background waker, off the publishing thread -- can start the deliveries.
    assert settings.MESH_WEBHOOK_WAKE_IN_BACKGROUND
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


def test_lost_wakeups_are_replaced_by_the_sweep(client, receiver, workers, broker, settings):
    # Sent inline, so that all five are in the broker when it is flushed (the background
    # waker would merge them, and might not have sent them yet).
    settings.MESH_WEBHOOK_WAKE_IN_BACKGROUND = False
    bodies = [f"while no worker ran {n}".encode() for n in range(5)]
    _publish(client, bodies)
    assert _drop_queued_wakeups(broker) >= 5  # the wake-ups were sent, and are gone now
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

    # Mid-run: flush again while the worker runs (the broker's queue bindings go too), and
    # publish more; what the flush cost is wake-ups, and the sweep replaces them.
    _drop_queued_wakeups(broker)
    more = [f"after a flush mid-run {n}".encode() for n in range(5)]
    _publish(client, more)
    pushes = receiver.wait_for(10, 25)
    assert sorted(push.body for push in pushes) == sorted(bodies + more), worker.output()
    _wait_until(_queue_empty, 10, workers, "every push acknowledged")


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

