#!/usr/bin/env python
"""Webhook push delivery of meshsite: deliveries/s from one Celery worker process, and
publish -> webhook latency at a steady publish rate.

Self-contained, like rest_throughput.py (whose helpers it imports): (re)creates the scratch
database meshsite_bench_hooks, migrates it, creates an instance and a service key with the
CLI, starts Daphne, fetches a token, creates queues and exempt-handshake webhook
subscriptions through the REST API pointing at a local receiver, then starts ONE Celery
worker process (`celery -A meshsite worker --pool=threads --concurrency=4`) and, unless
--no-beat, `celery beat` (MESH_SWEEP_INTERVAL=1: the sweep that restarts lost wake-ups).

  A  throughput  N messages are pre-loaded into the paused subscriptions' queues (ORM
                 bulk_create, not measured); the subscriptions are resumed through the API and
                 the clock runs until all N arrived at the receiver: deliveries/s, CPU per
                 delivery. With 1 subscription (the headline) one runner pushes at a time
                 (the per-subscription lease); with --subscriptions 1,4 also 4 in parallel.
  B  latency     publishes through the REST API at a steady open-loop rate (default 20, 50 and
                 200/s, 1 s warm-up + 10 s measured each) into one subscribed queue; per message
                 publish-request-sent -> receiver-arrival latency p50/p99 (both clocks are
                 CLOCK_MONOTONIC of the same machine), plus publish latency and CPU per message.
                 A control run publishes at --control-rate into a queue without webhooks.

The receiver is a small asyncio HTTP/1.1 server in its own process (this file with
--serve-receiver): it answers 200 with an empty body and records arrival time, path,
x-message-id and the 12-digit sequence number each payload starts with.

--breakdown times the engine's steps in-process (claim, push, attempt-log INSERT, ack,
subscription UPDATE, lease UPDATE), parts of a push (name check, client construction, whole
guarded_request vs a keep-alive client), and what-if SQL (one-statement claim and settle).
--profile samples the worker with py-spy during one extra scenario-A run.

    .venv/bin/python bench/webhook_throughput.py
    .venv/bin/python bench/webhook_throughput.py --messages 2000 --rates 50 --duration 5
    .venv/bin/python bench/webhook_throughput.py --breakdown --profile

Results go to bench/results/ as JSON (gitignored). Not a test: nothing here asserts.
Ctrl-C (or SIGTERM) stops it at any point; every process it started is stopped and the
scratch database is dropped unless --keep-db.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as rt  # noqa: E402  (the shared harness: Mesh, servers, clients, CPU readers, machine facts)

ROOT = rt.ROOT
RESULTS = rt.RESULTS
BIN = rt.BIN
HOST = rt.HOST
NAMESPACE = rt.NAMESPACE
REST = rt.REST
MANAGEMENT = rt.MANAGEMENT
enc = rt.enc
SEQ_DIGITS = 12  # every payload starts with its sequence number, so arrivals map to publishes


def queue_name(index: int) -> str:
    return f"{NAMESPACE}/q{index}"


def hook_name(index: int) -> str:
    return f"{NAMESPACE}/hook{index}"


PLAIN_QUEUE = f"{NAMESPACE}/plain"  # no webhook: the control for publish latency


# --------------------------------------------------------------------------------------
# The receiver: its own process, asyncio, HTTP/1.1 with keep-alive (meshsite's pushes
# open a connection each). Control paths: /stats, /dump?from=K, /reset.


OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def serve_receiver(port: int, lifetime: float) -> None:
    arrivals: list[tuple[float, str, str, str]] = []  # (monotonic, path, x-message-id, sequence)
    parent = os.getppid()

    def reply(writer: asyncio.StreamWriter, body: bytes, kind: bytes = b"application/json") -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: "
            + kind
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head[:-4].split(b"\r\n")
                target = lines[0].split(b" ", 2)[1]
                length, message_id, close = 0, b"", False
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"x-message-id":
                        message_id = value.strip()
                    elif name == b"connection":
                        close = value.strip().lower() == b"close"
                body = await reader.readexactly(length) if length else b""
                if target.startswith(b"/hook"):
                    arrivals.append(
                        (time.monotonic(), target.decode(), message_id.decode(), body[:SEQ_DIGITS].decode("latin-1"))
                    )
                    writer.write(OK_RESPONSE)
                elif target == b"/stats":
                    reply(writer, json.dumps({"count": len(arrivals)}).encode())
                elif target.startswith(b"/dump"):
                    start = int(target.partition(b"from=")[2] or 0)
                    reply(writer, json.dumps(arrivals[start:]).encode())
                elif target == b"/reset":
                    arrivals.clear()
                    reply(writer, b"{}")
                else:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, HOST, port, backlog=1024)
        deadline = time.monotonic() + lifetime
        async with server:
            # Stops by itself: when the benchmark that started it is gone, or after `lifetime`.
            while time.monotonic() < deadline and os.getppid() == parent:
                await asyncio.sleep(0.5)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(main())


# --------------------------------------------------------------------------------------
# CPU bookkeeping (per role), as in rest_throughput.py


@dataclass
class Snap:
    roles: dict[str, dict[int, float]]
    postgres: dict[int, float]
    redis: dict[int, float]
    own: float
    busy: float
    total: float
    db_transactions: int
    db_sessions: int


def take_snapshot(pids: dict[str, list[int]], dsn: str) -> Snap:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback, sessions FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]
    times = os.times()
    return Snap(
        roles={role: {pid: rt._proc_cpu(pid) for pid in role_pids} for role, role_pids in pids.items()},
        postgres=rt._postgres_cpu(),
        redis=rt.processes_cpu("redis-server"),
        own=times.user + times.system,
        busy=(sum(values[:8]) - idle) / rt.TICK,
        total=sum(values[:8]) / rt.TICK,
        db_transactions=int(row[0]) if row else 0,
        db_sessions=int(row[1]) if row else 0,
    )


def cpu_notes(before: Snap, after: Snap, ops: int) -> dict[str, Any]:
    def per_op(seconds: float) -> float | None:
        return round(seconds * 1e6 / ops, 1) if ops else None

    roles = {role: rt._delta(before.roles[role], after.roles.get(role, {})) for role in before.roles}
    postgres = rt._delta(before.postgres, after.postgres)
    redis = rt._delta(before.redis, after.redis)
    own = after.own - before.own
    busy = after.busy - before.busy
    total = max(1e-9, after.total - before.total)
    ours = sum(roles.values()) + postgres + redis + own
    notes: dict[str, Any] = {f"{role}_us_per_op": per_op(cpu) for role, cpu in roles.items()}
    notes.update(
        postgres_us_per_op=per_op(postgres),
        redis_us_per_op=per_op(redis),
        bench_us_per_op=per_op(own),
        worker_cpu_pct=round(100 * roles.get("worker", 0.0) / (total / 2), 1),  # of one core
        machine_busy_pct=round(100 * busy / total, 1),
        other_processes_pct=round(100 * max(0.0, busy - ours) / total, 1),
        db_transactions_per_op=round((after.db_transactions - before.db_transactions) / ops, 2) if ops else None,
        db_sessions_per_op=round((after.db_sessions - before.db_sessions) / ops, 3) if ops else None,
    )
    return notes


def pct(values: list[float], fraction: float) -> float:
    return round(rt.percentile(sorted(values), fraction) * 1e3, 2) if values else float("nan")


# --------------------------------------------------------------------------------------
# The system under test


class HookMesh(rt.Mesh):
    """rest_throughput's Mesh (scratch DB, CLI instance+key, Daphne) plus Redis, the
    receiver, one Celery worker and beat."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.receiver: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.beat: subprocess.Popen | None = None
        self.worker_name = f"bench-hooks-{os.getpid()}@{socket.gethostname()}"
        self.receiver_http = httpx.Client(base_url=f"http://{HOST}:{args.receiver_port}", timeout=30)
        self.api: httpx.Client | None = None

    def env(self, port: int | None = None, server: bool = False) -> dict[str, str]:
        env = super().env(port, server=True)  # --env applies to every process
        env.update(
            REDIS_URL=self.args.redis_url,
            MESH_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8",
            MESH_SWEEP_INTERVAL=str(self.args.sweep_interval),
            # Scenario A uses resume only as its starting gun; the slow start after a resume
            # (10/s doubling every 5 s) would measure the ramp, not the engine.
            MESH_WEBHOOK_RESUME_RATE="0",
        )
        if self.args.batch:
            env["MESH_WEBHOOK_BATCH"] = str(self.args.batch)
        return env

    # -- processes ----------------------------------------------------------------------

    def _spawn(self, command: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.var_dir / log_name, "ab") as log:
            return subprocess.Popen(command, cwd=ROOT, env=env or self.env(), stdout=log, stderr=subprocess.STDOUT)

    def log_tail(self, log_name: str) -> str:
        path = self.var_dir / log_name
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def start_receiver(self) -> None:
        self.receiver = self._spawn(
            [sys.executable, str(Path(__file__).resolve()), "--serve-receiver", str(self.args.receiver_port)],
            "receiver.log",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.receiver.poll() is not None:
                raise SystemExit(f"the receiver exited:\n{self.log_tail('receiver.log')}")
            try:
                self.receiver_http.get("/stats")
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit("the receiver did not answer within 20 s")

    def purge_broker(self) -> None:
        """Drop tasks a previous run left in the bench's Redis database (never db 0's)."""
        from redis import Redis

        redis = Redis.from_url(self.args.redis_url)
        if redis.connection_pool.connection_kwargs.get("db", 0) == 0:
            print("note: --redis-url is Redis database 0: a test suite's workers may take the bench's tasks")
            return
        redis.delete("celery", "unacked", "unacked_index")

    def start_worker(self) -> None:
        command = [
            str(BIN / "celery"),
            "-A",
            "meshsite",
            "worker",
            "--pool=threads",
            f"--concurrency={self.args.concurrency}",
            "--loglevel=WARNING",
            "-n",
            self.worker_name,
            "--without-gossip",
            "--without-mingle",
        ]
        self.worker = self._spawn(command, "worker.log")
        from celery import Celery

        app = Celery(broker=self.args.redis_url)
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                if self.worker.poll() is not None:
                    raise SystemExit(f"the worker exited:\n{self.log_tail('worker.log')}")
                if app.control.ping(destination=[self.worker_name], timeout=1.0):
                    break
            else:
                raise SystemExit(f"the worker did not answer a ping within 60 s:\n{self.log_tail('worker.log')}")
        finally:
            app.close()
        if not self.args.no_beat:
            self.beat = self._spawn(
                [
                    str(BIN / "celery"),
                    "-A",
                    "meshsite",
                    "beat",
                    "--loglevel=WARNING",
                    "--schedule",
                    str(self.var_dir / "beat-schedule"),
                ],
                "beat.log",
            )

    def stop_workers(self) -> None:
        for process in (self.beat, self.worker):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (self.beat, self.worker):
            if process is not None:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.beat = self.worker = None

    def pids(self) -> dict[str, list[int]]:  # type: ignore[override]
        roles = {"worker": self.worker, "beat": self.beat, "receiver": self.receiver}
        pids = {role: [p.pid] for role, p in roles.items() if p is not None}
        pids["daphne"] = [process.pid for process in self.processes]
        return pids

    def close(self) -> None:
        self.stop_workers()
        if self.receiver is not None and self.receiver.poll() is None:
            self.receiver.send_signal(signal.SIGTERM)
            try:
                self.receiver.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.receiver.kill()
        if self.api is not None:
            self.api.close()
        self.receiver_http.close()
        super().close()

    # -- API calls ----------------------------------------------------------------------

    def connect_api(self, token: str) -> None:
        self.api = httpx.Client(
            base_url=f"http://{HOST}:{self.ports[0]}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def call(self, method: str, path: str, expect: tuple[int, ...], **kwargs: Any) -> httpx.Response:
        assert self.api is not None
        response = self.api.request(method, path, **kwargs)
        if response.status_code not in expect:
            raise SystemExit(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
        return response

    def create_hooks(self, count: int) -> None:
        self.call("PUT", f"{MANAGEMENT}/queues/{enc(PLAIN_QUEUE)}", (200, 201))
        for index in range(count):
            self.call("PUT", f"{MANAGEMENT}/queues/{enc(queue_name(index))}", (200, 201))
            body = {
                "name": hook_name(index),
                "address": f"queue:{queue_name(index)}",
                "qos": 1,
                "pushConfig": {
                    "type": "webhook",
                    "endpoint": f"http://{HOST}:{self.args.receiver_port}/hook/{index}",
                    "exemptHandshake": True,
                },
            }
            self.call("POST", f"{REST}/subscriptions", (201,), json=body)
            self.set_state(index, "pause")

    def set_state(self, index: int, action: str) -> None:
        self.call("PUT", f"{REST}/subscriptions/{enc(hook_name(index))}/state", (200,), json={"action": action})

    # -- data -----------------------------------------------------------------------------

    def django(self, code: str, extra_env: dict[str, str], timeout: float = 600) -> str:
        env = {**self.env(), **extra_env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        env.setdefault("DJANGO_SETTINGS_MODULE", "meshsite.settings")
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise SystemExit(f"django helper failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def preload(self, plan: dict[str, tuple[int, int]]) -> None:
        self.django(PRELOAD_CODE, {"BENCH_PLAN": json.dumps(plan), "BENCH_PAYLOAD": str(self.args.payload)})

    def queued(self) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM messaging_message").fetchone()
        return int(row[0]) if row else 0

    def attempts(self) -> tuple[int, int]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE succeeded), count(*) FILTER (WHERE NOT succeeded) "
                "FROM messaging_deliveryattempt"
            ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    # -- receiver -------------------------------------------------------------------------

    def received(self) -> int:
        return int(self.receiver_http.get("/stats").json()["count"])

    def arrivals(self) -> list[tuple[float, str, str, str]]:
        return [tuple(row) for row in self.receiver_http.get("/dump").json()]  # type: ignore[misc]

    def reset_receiver(self) -> None:
        self.receiver_http.get("/reset")


PRELOAD_CODE = r"""
import json, os
import django
django.setup()
from datetime import timedelta
from django.utils import timezone
from messaging.models import Message, Queue

plan, size = json.loads(os.environ["BENCH_PLAN"]), int(os.environ["BENCH_PAYLOAD"])
pad = os.urandom(max(0, size - 12))
for name, (start, count) in plan.items():
    queue = Queue.objects.get(name=name)
    now = timezone.now()
    expires = now + timedelta(days=1)
    Message.objects.bulk_create(
        [Message(queue=queue, payload=b"%012d" % (start + i) + pad, size=12 + len(pad),
                 content_type="application/octet-stream", address="queue:" + name, qos=1,
                 created_at=now, expires_at=expires) for i in range(count)],
        batch_size=1000)
"""


# --------------------------------------------------------------------------------------
# Scenario A: drain a pre-loaded backlog


@dataclass
class Throughput:
    subscriptions: int
    messages: int
    delivered: int
    distinct: int
    seconds: float
    deliveries_per_s: float
    steady_deliveries_per_s: float  # between the 10th and the 90th percentile arrival
    first_arrival_ms: float
    gap_p50_ms: float
    gap_p99_ms: float
    batch_boundary_gap_p50_ms: float | None
    notes: dict[str, Any] = field(default_factory=dict)


def scenario_a(
    mesh: HookMesh, subscriptions: int, messages: int, stop: threading.Event, seq_start: int = 0
) -> Throughput:
    per_queue = [messages // subscriptions + (1 if i < messages % subscriptions else 0) for i in range(subscriptions)]
    plan, start = {}, seq_start
    for index, count in enumerate(per_queue):
        plan[queue_name(index)] = (start, count)
        start += count
    mesh.preload(plan)
    mesh.reset_receiver()
    before = take_snapshot(mesh.pids(), mesh.dsn)
    t0 = time.monotonic()
    for index in range(subscriptions):
        mesh.set_state(index, "resume")
    deadline = t0 + mesh.args.a_timeout
    received = 0
    while not stop.is_set() and time.monotonic() < deadline:
        received = mesh.received()
        if received >= messages:
            break
        stop.wait(0.05)
    after = take_snapshot(mesh.pids(), mesh.dsn)
    waited = time.monotonic() - t0
    arrivals = mesh.arrivals()
    for index in range(subscriptions):
        mesh.set_state(index, "pause")
    # The last acks commit just after the last push; wait (bounded) for the queues to empty.
    settle_deadline = time.monotonic() + 10
    while mesh.queued() and time.monotonic() < settle_deadline and received >= messages:
        time.sleep(0.1)
    times = sorted(row[0] for row in arrivals)
    delivered = len(times)
    seconds = (times[-1] - t0) if delivered >= messages else waited
    lo, hi = int(0.1 * (delivered - 1)), int(0.9 * (delivered - 1))
    steady = (hi - lo) / (times[hi] - times[lo]) if delivered > 10 and times[hi] > times[lo] else 0.0
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    batch = mesh.args.batch or 100
    boundary = [gaps[i - 1] for i in range(batch, delivered, batch)] if subscriptions == 1 else []
    ok, failed = mesh.attempts()
    notes = cpu_notes(before, after, delivered)
    notes.update(
        left_in_queues=mesh.queued(), attempts_logged_ok=ok, attempts_logged_failed=failed, window_s=round(waited, 3)
    )
    return Throughput(
        subscriptions=subscriptions,
        messages=messages,
        delivered=delivered,
        distinct=len({row[2] for row in arrivals}),
        seconds=round(seconds, 3),
        deliveries_per_s=round(delivered / seconds, 1) if seconds else 0.0,
        steady_deliveries_per_s=round(steady, 1),
        first_arrival_ms=round((times[0] - t0) * 1e3, 1) if times else float("nan"),
        gap_p50_ms=pct(gaps, 0.5),
        gap_p99_ms=pct(gaps, 0.99),
        batch_boundary_gap_p50_ms=pct(boundary, 0.5) if boundary else None,
        notes=notes,
    )


# --------------------------------------------------------------------------------------
# Scenario B: steady publish rate through the REST API


@dataclass
class Latency:
    rate: int
    seconds: float
    published: int
    publish_errors: int
    delivered: int
    stranded: int  # published, never arrived within --drain
    duplicates: int
    send_lag_p99_ms: float  # how far the open-loop publisher fell behind its schedule
    publish_p50_ms: float
    publish_p99_ms: float
    e2e_p50_ms: float
    e2e_p90_ms: float
    e2e_p99_ms: float
    e2e_max_ms: float
    after_response_p50_ms: float  # receiver arrival - publish response received
    after_response_p99_ms: float
    over_100ms: int
    over_500ms: int
    notes: dict[str, Any] = field(default_factory=dict)


MAX_CONNECTIONS = 32


async def steady_publish(
    mesh: HookMesh,
    token: str,
    rate: int,
    warmup: float,
    duration: float,
    seq_start: int,
    stop: threading.Event,
    queue: str,
) -> tuple[dict[int, tuple[float, float, float, bool]], Snap, Snap, tuple[float, float]]:
    """Open loop: message i is due at start + i/rate whatever happened to the others (up to
    MAX_CONNECTIONS in flight). Returns seq -> (due, sent, answered, measured) and the CPU
    snapshots around the measured window."""
    loop = asyncio.get_running_loop()
    ports = mesh.ports
    idle = [rt.Connection(ports[i % len(ports)]) for i in range(4)]
    await asyncio.gather(*(conn.open() for conn in idle))
    opened = len(idle)
    free = asyncio.Condition()
    pad = os.urandom(max(0, mesh.args.payload - SEQ_DIGITS))
    path = f"{REST}/queues/{enc(queue)}/messages"
    headers = {"Authorization": f"Bearer {token}", "x-qos": "1", "Content-Type": "application/octet-stream"}
    record: dict[int, tuple[float, float, float, bool]] = {}
    errors: collections.Counter[str] = collections.Counter()
    start = loop.time() + 0.2
    measure_from = start + warmup
    total = int(rate * (warmup + duration))
    tasks: set[asyncio.Task] = set()

    async def one(seq: int, due: float, conn: rt.Connection) -> None:
        raw = rt.build_request("POST", path, headers, b"%012d" % seq + pad)
        sent = loop.time()
        try:
            async with asyncio.timeout(rt.REQUEST_TIMEOUT):
                status, _, body = await conn.request(raw)
            if status != 204:
                errors[f"{status} {body[:100]!r}"] += 1
            else:
                record[seq] = (due, sent, loop.time(), due >= measure_from)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
            errors[type(error).__name__] += 1
            conn.close()
        async with free:
            idle.append(conn)
            free.notify()

    snaps: list[Snap] = []
    for i in range(total):
        if stop.is_set():
            break
        due = start + i / rate
        if not snaps and due >= measure_from:
            snaps.append(await asyncio.to_thread(take_snapshot, mesh.pids(), mesh.dsn))
        await asyncio.sleep(max(0.0, due - loop.time()))
        async with free:
            if not idle and opened < MAX_CONNECTIONS:
                idle.append(rt.Connection(ports[opened % len(ports)]))
                opened += 1
            await free.wait_for(lambda: bool(idle))
            conn = idle.pop()
        task = asyncio.create_task(one(seq_start + i, due, conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.sleep(max(0.0, start + total / rate - loop.time()))
    snaps.append(await asyncio.to_thread(take_snapshot, mesh.pids(), mesh.dsn))
    if tasks:
        await asyncio.wait(tasks, timeout=rt.REQUEST_TIMEOUT)
    for conn in idle:
        conn.close()
    if errors:
        print(f"    publish errors: {dict(errors.most_common(3))}")
    return record, snaps[0], snaps[-1], (measure_from, start + total / rate)


def scenario_b(mesh: HookMesh, token: str, rate: int, stop: threading.Event, seq_start: int) -> Latency:
    args = mesh.args
    mesh.reset_receiver()
    record, before, after, (window_from, window_to) = asyncio.run(
        steady_publish(mesh, token, rate, args.warmup, args.duration, seq_start, stop, queue_name(0))
    )
    window = window_to - window_from
    answered_in_window = sum(1 for row in record.values() if window_from <= row[2] <= window_to)
    deadline = time.monotonic() + args.drain
    while not stop.is_set() and time.monotonic() < deadline and mesh.received() < len(record):
        stop.wait(0.1)
    arrivals = mesh.arrivals()
    first: dict[int, float] = {}
    duplicates = 0
    for arrived, _path, _id, seq in arrivals:
        if seq.isdigit():
            number = int(seq)
            if number in first:
                duplicates += 1
            else:
                first[number] = arrived
    measured = {seq: row for seq, row in record.items() if row[3]}
    e2e = [first[seq] - row[1] for seq, row in measured.items() if seq in first]
    after_response = [first[seq] - row[2] for seq, row in measured.items() if seq in first]
    publish = [row[2] - row[1] for row in measured.values()]
    lag = [row[1] - row[0] for row in measured.values()]
    published_in_window = len(measured)
    notes = cpu_notes(before, after, published_in_window)
    # p50 per second of the window: a rising trend means deliveries fall behind publishes.
    by_second: dict[int, list[float]] = collections.defaultdict(list)
    origin = min((row[0] for row in measured.values()), default=0.0)
    for seq, row in measured.items():
        if seq in first:
            by_second[int(row[0] - origin)].append(first[seq] - row[1])
    notes.update(
        achieved_publish_rate=round(answered_in_window / window, 1) if window else None,
        left_in_queue_after_drain=mesh.queued(),
        e2e_p50_ms_by_second=[pct(by_second[k], 0.5) for k in sorted(by_second)],
    )
    return Latency(
        rate=rate,
        seconds=args.duration,
        published=published_in_window,
        publish_errors=int(rate * (args.warmup + args.duration)) - len(record),
        delivered=len(e2e),
        stranded=sum(1 for seq in record if seq not in first),
        duplicates=duplicates,
        send_lag_p99_ms=pct(lag, 0.99),
        publish_p50_ms=pct(publish, 0.5),
        publish_p99_ms=pct(publish, 0.99),
        e2e_p50_ms=pct(e2e, 0.5),
        e2e_p90_ms=pct(e2e, 0.9),
        e2e_p99_ms=pct(e2e, 0.99),
        e2e_max_ms=round(max(e2e) * 1e3, 1) if e2e else float("nan"),
        after_response_p50_ms=pct(after_response, 0.5),
        after_response_p99_ms=pct(after_response, 0.99),
        over_100ms=sum(1 for v in e2e if v > 0.1),
        over_500ms=sum(1 for v in e2e if v > 0.5),
        notes=notes,
    )


def scenario_control(mesh: HookMesh, token: str, rate: int, stop: threading.Event, seq_start: int) -> dict[str, Any]:
    """The same steady publishing into a queue without webhooks: what a publish costs when
    it sends no wake-up (the difference is the wake-up's share of the publish latency)."""
    args = mesh.args
    record, before, after, (window_from, window_to) = asyncio.run(
        steady_publish(mesh, token, rate, args.warmup, args.duration, seq_start, stop, PLAIN_QUEUE)
    )
    measured = [row for row in record.values() if row[3]]
    publish = [row[2] - row[1] for row in measured]
    with psycopg.connect(mesh.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM messaging_message WHERE address = %s", [f"queue:{PLAIN_QUEUE}"])
    return {
        "rate": rate,
        "published": len(measured),
        "publish_p50_ms": pct(publish, 0.5),
        "publish_p99_ms": pct(publish, 0.99),
        **cpu_notes(before, after, len(measured)),
    }


# --------------------------------------------------------------------------------------
# Breakdown (--breakdown): the engine's steps timed in-process, after the worker stopped


BREAKDOWN_CODE = r"""
import http.client, json, os, socket, threading, time, uuid
from datetime import timedelta
import django
django.setup()
import httpx
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from messaging.models import DeliveryAttempt, Message, WebhookSubscription
from messaging.webhooks import delivery, netguard

name, count, size = os.environ["BENCH_HOOK"], int(os.environ["BENCH_N"]), int(os.environ["BENCH_PAYLOAD"])
port = int(os.environ["BENCH_RECEIVER_PORT"])
WebhookSubscription.objects.filter(name=name).update(status="Active", runner_until=None, next_attempt_at=None)
sub = WebhookSubscription.objects.select_related("instance", "queue").get(name=name)
queue = sub.queue
pad = os.urandom(max(0, size - 12))
results = {}
WARM = 20
TICK = os.sysconf("SC_CLK_TCK")


def pg_cpu():
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as handle:
                    if handle.read().strip() != "postgres":
                        continue
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                total += sum(int(v) for v in fields[11:15])
            except (OSError, ValueError, IndexError):
                pass
    return total / TICK


def preload(n):
    now = timezone.now()
    Message.objects.bulk_create([
        Message(queue=queue, payload=b"%012d" % i + pad, size=size, content_type="application/octet-stream",
                address="queue:" + queue.name, qos=1, created_at=now, expires_at=now + timedelta(days=1))
        for i in range(n)], batch_size=1000)


class Timer:
    def __init__(self):
        self.acc = {}

    def run(self, label, fn):
        w, c = time.perf_counter(), time.process_time()
        value = fn()
        slot = self.acc.setdefault(label, [0.0, 0.0, 0])
        slot[0] += time.perf_counter() - w
        slot[1] += time.process_time() - c
        slot[2] += 1
        return value

    def publish(self, group, per=None, pg=None):
        for label, (wall, cpu, n) in self.acc.items():
            n = per or n
            results[label] = {"group": group, "wall_us": round(wall / n * 1e6, 1), "cpu_us": round(cpu / n * 1e6, 1),
                              "n": n}
            if pg is not None:
                results[label]["pg_cpu_us"] = round(pg / n * 1e6, 1)


def repeat(group, label, fn, n=count):
    timer = Timer()
    for i in range(n + WARM):
        if i == WARM:
            timer = Timer()
        timer.run(label, fn)
    timer.publish(group)


consumer = f"webhook:{sub.pk}"
K = settings.MESH_WEBHOOK_PREFETCH

# 1. The engine's steps per round, in webhook_deliver_batch's order: claim K in one
# statement, push each over the run's kept-alive session, settle the K in one transaction.
preload((count // K + 2) * K)
timer = Timer()
rounds, pushed = 0, 0
with netguard.Session() as session:
    while rounds < count // K + 1:
        claimed = timer.run("claim: one UPDATE ... RETURNING for the round",
                            lambda: delivery._claim(sub, K, timezone.now()).claimed)
        outcomes = []
        for message in claimed:
            outcome = timer.run("push: delivery.push over the run's kept-alive Session",
                                lambda: delivery.push(sub, message, session))
            assert outcome.succeeded, outcome
            outcomes.append((message, outcome, timezone.now()))
        timer.run("settle: one transaction for the round (DELETE, attempt INSERT, health UPDATE)",
                  lambda: delivery._settle(sub, claimed, outcomes))
        rounds, pushed = rounds + 1, pushed + len(claimed)
timer.publish("engine step (per message)", per=pushed)
Message.objects.filter(queue=queue).delete()

# 2. The whole engine in-process (no Celery), per message, with PostgreSQL's CPU.
WebhookSubscription.objects.filter(pk=sub.pk).update(runner_until=None, resumed_at=None, next_attempt_at=None)
preload(count * 5)
with override_settings(MESH_WEBHOOK_BATCH=count * 5):
    timer = Timer()
    pg0 = pg_cpu()
    result = timer.run("whole: webhook_deliver_batch, per message",
                       lambda: delivery.webhook_deliver_batch(subscription_id=sub.pk))
    timer.publish("engine whole", per=max(1, result.delivered), pg=pg_cpu() - pg0)

# 3. A push: a connection per push against the session's kept-alive one (same receiver).
url = f"http://127.0.0.1:{port}/hook/breakdown"
headers = {"Content-Type": "application/octet-stream", "x-address": "queue:x", "x-qos": "1",
           "x-message-id": str(uuid.uuid4())}
body = b"%012d" % 0 + pad
session = netguard.Session()
for label, fn in [
    ("name check: parse_url + resolve_public",
     lambda: (netguard.parse_url(url), netguard.resolve_public("127.0.0.1", port))),
    ("guarded_request POST (a new connection each time: handshakes, token fetches)",
     lambda: netguard.guarded_request("POST", url, headers=headers, content=body)),
    ("Session.request POST (kept-alive connection: pushes)",
     lambda: session.request("POST", url, headers=headers, content=body)),
]:
    repeat("push part", label, fn)
session.close()

# 5. Floors, measured in the same run with psycopg and http.client directly (no Django):
# the raw PostgreSQL durable single-row INSERT (the REST benchmark's baseline), the raw SQL a
# delivery needs (claim a round in one UPDATE ... RETURNING, delete it by claim id, each in
# its own transaction with synchronous_commit off, as the engine does), and one HTTP POST
# over a kept-alive connection to the same receiver.
import psycopg

db = settings.DATABASES["default"]
raw = psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
                      dbname=db["NAME"], password=db["PASSWORD"] or None, autocommit=True)
raw.execute("CREATE TEMP TABLE floor_insert (id bigserial PRIMARY KEY, payload bytea, created_at timestamptz)")
repeat("floor", "raw PostgreSQL durable single-row INSERT (autocommit)",
       lambda: raw.execute("INSERT INTO floor_insert (payload, created_at) VALUES (%s, now())", [body]))
m = Message._meta.db_table
preload((count // K + 2) * K)
w0, c0, done = time.perf_counter(), time.process_time(), 0
while True:
    with raw.transaction():
        raw.execute("SET LOCAL synchronous_commit TO OFF")
        rows = raw.execute(
            f"UPDATE {m} SET locked_until = now() + interval '45 seconds', claim_id = gen_random_uuid(), "
            f"claimed_by = 'floor', delivery_count = delivery_count + 1 WHERE id IN (SELECT id FROM {m} "
            f"WHERE queue_id = %s AND (locked_until IS NULL OR locked_until <= now()) ORDER BY id LIMIT %s "
            f"FOR UPDATE SKIP LOCKED) RETURNING id, uuid, claim_id, payload, content_type, address", [queue.pk, K]
        ).fetchall()
    if not rows:
        break
    with raw.transaction():
        raw.execute("SET LOCAL synchronous_commit TO OFF")
        raw.execute(f"DELETE FROM {m} WHERE claim_id = ANY(%s)", [[row[2] for row in rows]])
    done += len(rows)
results["raw SQL of a delivery: claim a round + delete it, per message"] = {
    "group": "floor", "wall_us": round((time.perf_counter() - w0) / done * 1e6, 1),
    "cpu_us": round((time.process_time() - c0) / done * 1e6, 1), "n": done}
raw.close()
plain = http.client.HTTPConnection("127.0.0.1", port)


def plain_post():
    plain.request("POST", "/hook/floor", body=body, headers=headers)
    plain.getresponse().read()


repeat("floor", "http.client POST over a kept-alive connection (no guard)", plain_post)
plain.close()

# 6. The publish side: the wake-up every publish to a queue with webhooks sends (in Daphne,
# from the request's own short-lived thread).
from messaging.webhooks.delivery import wake_webhooks
from messaging import dispatch


def in_new_thread(fn):
    def run():
        fn()
        connection.close()
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()


repeat("publish side", "wake_webhooks (subscription SELECT + Celery send), same thread",
       lambda: wake_webhooks([queue.pk]))
repeat("publish side", "wake_webhooks from a new thread each time (as under Daphne)",
       lambda: in_new_thread(lambda: wake_webhooks([queue.pk])))
repeat("publish side", "Celery send of webhook_deliver by name alone, same thread", lambda: dispatch.webhook_deliver(0))
Message.objects.filter(queue=queue).delete()
print(json.dumps(results))
"""


def breakdown(mesh: HookMesh) -> dict[str, Any]:
    out = mesh.django(
        BREAKDOWN_CODE,
        {
            "BENCH_HOOK": hook_name(0),
            "BENCH_N": str(mesh.args.breakdown_n),
            "BENCH_PAYLOAD": str(mesh.args.payload),
            "BENCH_RECEIVER_PORT": str(mesh.args.receiver_port),
        },
    )
    return dict(json.loads(out.strip().splitlines()[-1]))


# --------------------------------------------------------------------------------------
# Profile (--profile): py-spy on the worker during one extra scenario-A run. Worker threads
# live for the whole run (pool=threads), so py-spy sees them all, unlike Daphne's.

ENGINE_PHASES = [  # innermost frame matching wins
    ("push: TCP connect", r"^(connect|create_connection) "),
    ("push: name check", r"^(resolve_public|parse_url) "),
    ("push: request + response", r"^(Session\.request|Session\._exchange) "),
    ("push: headers, signing, auth", r"^push "),
    ("claim round (_claim)", r"^_claim "),
    ("settle round (_settle)", r"^_settle "),
    ("run start and end (_runnable, _take_lease, _end_run)", r"^(_runnable|_take_lease|_end_run) "),
    ("run loop", r"^(webhook_deliver_batch|_push_round) "),
]
PG_WAIT = re.compile(r"^(Connection\.wait|wait_conn|wait|wait_c|_wait_c) \(psycopg")
# Where idle threads sit: the thread pool's queue, the event loop's epoll, psycopg_pool's threads.
IDLE_LEAVES = {"Condition.wait", "Event.wait", "_worker", "_epoll.poll", "poll", "select", "sleep", "Queue.get"}
SOCKET_WAIT = re.compile(r"^(read|recv|recv_into|_recv|readinto|sock_recv|_DeadlineReader\.readinto) \(|\(.*socket\.py")


def analyze_worker_profile(raw_path: Path, rate: int, deliveries: int) -> dict[str, Any]:
    phases: collections.Counter[str] = collections.Counter()
    waits: collections.Counter[str] = collections.Counter()
    outside_busy = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")[1:]
        if not any(frame.startswith("webhook_deliver_batch ") for frame in frames):
            leaf = frames[-1].split(" (", 1)[0] if frames else ""
            if leaf not in IDLE_LEAVES:
                outside_busy += count
            continue
        label = rt._phase(frames, ENGINE_PHASES, "batch loop, lease release")
        phases[label] += count
        if PG_WAIT.search(frames[-1]):
            waits[label + "|pg"] += count
        elif label.startswith("push") and SOCKET_WAIT.search(frames[-1]):
            waits[label + "|net"] += count

    def per_delivery(samples: int) -> float:
        return round(samples / rate / max(1, deliveries) * 1e6, 1)

    return {
        "per_delivery_us": {
            label: {
                "total": per_delivery(count),
                "waiting_on_postgres": per_delivery(waits[label + "|pg"]),
                "in_socket_calls": per_delivery(waits[label + "|net"]),
            }
            for label, count in phases.most_common()
        },
        "engine_total_us_per_delivery": per_delivery(sum(phases.values())),
        "outside_engine_busy_us_per_delivery": per_delivery(outside_busy),
    }


def profile_worker(mesh: HookMesh, stop: threading.Event, stamp: str, seq_start: int) -> dict[str, Any]:
    py_spy = rt.find_py_spy()
    if not py_spy:
        return {}
    assert mesh.worker is not None
    raw_path = RESULTS / f"profile-webhook-worker-{stamp}.txt"
    svg_path = RESULTS / f"profile-webhook-worker-{stamp}.svg"
    rate = 200
    spies = rt.start_py_spy(py_spy, mesh.worker.pid, rate, raw_path, svg_path)
    try:
        time.sleep(1.0)  # py-spy attaches
        result = scenario_a(mesh, 1, min(mesh.args.messages, 2000), stop, seq_start)
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for spy in spies:
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
    if not raw_path.exists():
        print("py-spy wrote no profile (needs ptrace permission)")
        return {}
    # The samples span the whole py-spy session; deliveries normalise them.
    analysis = analyze_worker_profile(raw_path, rate, result.delivered)
    analysis["run"] = asdict(result)
    analysis["files"] = {"raw": str(raw_path.relative_to(ROOT)), "flamegraph": str(svg_path.relative_to(ROOT))}
    return analysis


# --------------------------------------------------------------------------------------
# Output


def print_tables(a_results: list[Throughput], b_results: list[Latency]) -> None:
    if a_results:
        print("\nA: drain a pre-loaded backlog, one worker process (pool=threads)")
        header = (
            f"{'subs':>4} {'msgs':>6} {'deliv/s':>8} {'steady/s':>8} {'first ms':>8} {'gap p50':>7} "
            f"{'gap p99':>7} {'batch gap':>9} {'wrk µs/d':>8} {'wrk%':>5} {'pg µs/d':>7} {'rcv µs/d':>8} "
            f"{'tx/d':>5} {'cpu%':>5} {'other%':>6} {'dup':>3}"
        )
        print(header)
        print("-" * len(header))
        for r in a_results:
            n = r.notes
            print(
                f"{r.subscriptions:>4} {r.delivered:>6} {r.deliveries_per_s:>8.1f} {r.steady_deliveries_per_s:>8.1f} "
                f"{r.first_arrival_ms:>8.1f} {r.gap_p50_ms:>7.2f} {r.gap_p99_ms:>7.2f} "
                f"{r.batch_boundary_gap_p50_ms if r.batch_boundary_gap_p50_ms is not None else '':>9} "
                f"{n.get('worker_us_per_op')!s:>8} {n.get('worker_cpu_pct')!s:>5} {n.get('postgres_us_per_op')!s:>7} "
                f"{n.get('receiver_us_per_op')!s:>8} {n.get('db_transactions_per_op')!s:>5} "
                f"{n.get('machine_busy_pct')!s:>5} {n.get('other_processes_pct')!s:>6} {r.delivered - r.distinct:>3}"
            )
        print(
            "deliv/s: N / (last arrival - resume sent); steady/s: 10th..90th percentile arrivals; gap: between "
            "arrivals (ms);\nbatch gap: p50 gap at each MESH_WEBHOOK_BATCH boundary (task re-enqueue); µs/d: CPU per "
            "delivery; wrk%: worker CPU\nin % of one core; tx/d: database transactions per delivery"
        )
    if b_results:
        print("\nB: steady publish rate through REST -> webhook (latency: publish request sent -> receiver arrival)")
        header = (
            f"{'rate/s':>6} {'achieved':>8} {'pub p50':>7} {'pub p99':>7} {'e2e p50':>7} {'e2e p90':>7} "
            f"{'e2e p99':>7} {'e2e max':>7} {'aft p50':>7} {'>100ms':>6} {'>500ms':>6} {'strand':>6} "
            f"{'wrk µs/m':>8} {'dph µs/m':>8} {'pg µs/m':>7} {'tx/m':>5} {'cpu%':>5} {'other%':>6} {'err':>3}"
        )
        print(header)
        print("-" * len(header))
        for r in b_results:
            n = r.notes
            print(
                f"{r.rate:>6} {n.get('achieved_publish_rate')!s:>8} {r.publish_p50_ms:>7.2f} "
                f"{r.publish_p99_ms:>7.2f} {r.e2e_p50_ms:>7.2f} {r.e2e_p90_ms:>7.2f} {r.e2e_p99_ms:>7.2f} "
                f"{r.e2e_max_ms:>7.1f} {r.after_response_p50_ms:>7.2f} "
                f"{r.over_100ms:>6} {r.over_500ms:>6} {r.stranded:>6} {n.get('worker_us_per_op')!s:>8} "
                f"{n.get('daphne_us_per_op')!s:>8} {n.get('postgres_us_per_op')!s:>7} "
                f"{n.get('db_transactions_per_op')!s:>5} {n.get('machine_busy_pct')!s:>5} "
                f"{n.get('other_processes_pct')!s:>6} {r.publish_errors:>3}"
            )
        print(
            "pub: publish request latency (ms); e2e: publish request sent -> receiver arrival (ms); aft: publish "
            "response received ->\nreceiver arrival (ms); strand: never arrived within --drain; µs/m: CPU per "
            "message of worker / Daphne / PostgreSQL;\nother%: CPU of other "
            "processes (disturbance)"
        )


def print_breakdown(parts: dict[str, Any]) -> None:
    print("\nbreakdown (in-process, worker stopped; per call):")
    group = ""
    for label, value in parts.items():
        if value["group"] != group:
            group = value["group"]
            print(f"  [{group}]")
        print(f"    {label:<92} {value['wall_us']:>8.0f} µs wall {value['cpu_us']:>8.0f} µs cpu")


def print_profile(profile: dict[str, Any]) -> None:
    print(
        f"\nprofile: worker under py-spy during an extra scenario-A run ({profile['run']['deliveries_per_s']} "
        "deliveries/s); wall µs per delivery in the engine (innermost phase wins):"
    )
    for label, value in profile["per_delivery_us"].items():
        print(
            f"  {label:<42} {value['total']:>8.1f}   waiting on PostgreSQL {value['waiting_on_postgres']:>7.1f}"
            f"   in socket calls {value['in_socket_calls']:>7.1f}"
        )
    print(f"  {'total in the engine':<42} {profile['engine_total_us_per_delivery']:>8.1f}")
    print(f"  busy outside the engine (Celery, kombu, sweeps): {profile['outside_engine_busy_us_per_delivery']:>8.1f}")
    print(f"files: {profile['files']['flamegraph']}, {profile['files']['raw']}")


def versions() -> dict[str, str]:
    import celery
    import httpcore
    import redis

    info = {
        "celery": celery.__version__,
        "httpx": httpx.__version__,
        "httpcore": httpcore.__version__,
        "redis-py": redis.__version__,
    }
    try:
        done = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10)
        info["redis-server"] = done.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


# --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-receiver", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--messages", type=int, default=5000, help="scenario A backlog (default 5000)")
    parser.add_argument(
        "--subscriptions",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 4],
        help="scenario A: comma-separated subscription counts, each on its own queue (default 1,4)",
    )
    parser.add_argument("--a-timeout", type=float, default=240.0, help="scenario A: give up after (default 240 s)")
    parser.add_argument(
        "--rates",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[20, 50, 200],
        help="scenario B: comma-separated publish rates per second (default 20,50,200)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="scenario B: measured seconds per rate (10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="scenario B: unmeasured seconds first (1)")
    parser.add_argument(
        "--drain",
        type=float,
        default=60.0,
        help="scenario B: wait at most this long for the last pushes (default 60 s)",
    )
    parser.add_argument(
        "--control-rate",
        type=int,
        default=20,
        help="scenario B: also publish at this rate into a queue without webhooks (0: no)",
    )
    parser.add_argument("--skip-a", action="store_true", help="only scenario B")
    parser.add_argument("--skip-b", action="store_true", help="only scenario A")
    parser.add_argument("--payload", type=int, default=1024, help="message size in bytes (default 1024)")
    parser.add_argument("--concurrency", type=int, default=4, help="worker threads (default 4)")
    parser.add_argument("--batch", type=int, default=0, help="MESH_WEBHOOK_BATCH for the worker (default: product's)")
    parser.add_argument("--no-beat", action="store_true", help="no celery beat: only the wake-ups start deliveries")
    parser.add_argument("--sweep-interval", type=int, default=1, help="MESH_SWEEP_INTERVAL for beat (default 1)")
    parser.add_argument("--daphne", type=int, default=1, help="Daphne processes for scenario B (default 1)")
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/11",
        help="broker (default redis://127.0.0.1:6379/11: not database 0, which test suites use)",
    )
    parser.add_argument("--breakdown", action="store_true", help="also time the engine's steps in-process")
    parser.add_argument("--breakdown-n", type=int, default=300, help="calls per part for --breakdown (default 300)")
    parser.add_argument("--profile", action="store_true", help="also sample the worker with py-spy in one extra run")
    parser.add_argument(
        "--env",
        dest="server_env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for Daphne, the worker and beat (what-if runs), repeatable",
    )
    parser.add_argument("--db-url-query", default="", help="query string appended to DATABASE_URL (what-if runs)")
    parser.add_argument("--port", type=int, default=8760, help="first Daphne port (default 8760)")
    parser.add_argument("--receiver-port", type=int, default=8790, help="receiver port (default 8790)")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--db-name", default="meshsite_bench_hooks", help="scratch database, dropped and recreated")
    parser.add_argument("--keep-db", action="store_true", help="leave the scratch database at the end")
    args = parser.parse_args()
    if args.serve_receiver:
        serve_receiver(args.serve_receiver, lifetime=3 * 3600)
        return 0
    args.access_log = False
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", args.db_name):
        parser.error("--db-name must be a plain lower-case identifier")
    if any("=" not in item for item in args.server_env):
        parser.error("--env takes NAME=VALUE")

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    mesh = HookMesh(args)
    a_results: list[Throughput] = []
    b_results: list[Latency] = []
    output: dict[str, Any] = {}
    seq = 0
    try:
        print("setting up: database, migrate, instance, key ...", flush=True)
        mesh.create_database()
        output["machine"] = {**rt.machine_info(mesh.dsn), **versions(), "loadavg_at_start": os.getloadavg()}
        m = output["machine"]
        changed = ", ".join(m["uncommitted_changes_outside_bench"])
        print(
            f"machine: {m['nproc']} cpus, {m['cpu_model']}; {m['postgresql'].split(',')[0]}; celery {m['celery']}; "
            f"code at {m['commit']}" + (f" + uncommitted changes in {changed}" if changed else ""),
            flush=True,
        )
        output["config"] = {k: v for k, v in vars(args).items() if k != "serve_receiver"}
        mesh.start(args.daphne)
        token = mesh.token()
        mesh.connect_api(token)
        mesh.start_receiver()
        hooks = max([1, *([] if args.skip_a else args.subscriptions)])
        mesh.create_hooks(hooks)
        mesh.purge_broker()
        mesh.start_worker()
        print(
            f"worker {mesh.worker_name} (pool=threads, concurrency={args.concurrency})"
            + ("" if args.no_beat else f" + beat (MESH_SWEEP_INTERVAL={args.sweep_interval})")
            + f"; {hooks} subscription(s); receiver on :{args.receiver_port}",
            flush=True,
        )

        if not args.skip_a:
            for subscriptions in args.subscriptions:
                if stop.is_set():
                    break
                print(f"A: {args.messages} messages, {subscriptions} subscription(s) ...", flush=True)
                result = scenario_a(mesh, subscriptions, args.messages, stop, seq)
                seq += args.messages
                a_results.append(result)
                print(
                    f"   {result.deliveries_per_s:.1f} deliveries/s (steady {result.steady_deliveries_per_s:.1f}), "
                    f"{result.delivered}/{result.messages} arrived, worker {result.notes.get('worker_us_per_op')} µs "
                    f"CPU/delivery, other {result.notes.get('other_processes_pct')}%",
                    flush=True,
                )

        if not args.skip_b and not stop.is_set():
            mesh.set_state(0, "resume")
            for rate in args.rates:
                if stop.is_set():
                    break
                print(f"B: {rate}/s for {args.warmup:g}+{args.duration:g} s ...", flush=True)
                result_b = scenario_b(mesh, token, rate, stop, seq)
                seq += int(rate * (args.warmup + args.duration)) + 1
                b_results.append(result_b)
                print(
                    f"   e2e p50 {result_b.e2e_p50_ms:.1f} ms, p99 {result_b.e2e_p99_ms:.1f} ms, max "
                    f"{result_b.e2e_max_ms:.0f} ms; publish p50 {result_b.publish_p50_ms:.1f} ms; "
                    f"{result_b.stranded} stranded; other {result_b.notes.get('other_processes_pct')}%",
                    flush=True,
                )
            mesh.set_state(0, "pause")
            if args.control_rate and not stop.is_set():
                print(f"control: {args.control_rate}/s into a queue without webhooks ...", flush=True)
                output["control"] = scenario_control(mesh, token, args.control_rate, stop, seq)
                seq += int(args.control_rate * (args.warmup + args.duration)) + 1
                c = output["control"]
                print(
                    f"   publish p50 {c['publish_p50_ms']:.1f} ms, p99 {c['publish_p99_ms']:.1f} ms, Daphne "
                    f"{c.get('daphne_us_per_op')} µs CPU/publish",
                    flush=True,
                )

        if args.profile and not stop.is_set():
            print("profiling the worker under py-spy during one more scenario A (not in the table) ...", flush=True)
            output["profile"] = profile_worker(mesh, stop, stamp, seq)
            seq += args.messages

        mesh.stop_workers()
        if args.breakdown and not stop.is_set():
            print("timing the engine's steps in-process ...", flush=True)
            output["breakdown"] = breakdown(mesh)
            mesh.purge_broker()  # the wake-ups the breakdown sent
    except KeyboardInterrupt:
        stop.set()
        print("\ninterrupted; stopping", flush=True)
    finally:
        worker_log = mesh.log_tail("worker.log")
        mesh.close()
        if not args.keep_db:
            try:
                mesh.drop_database()
            except psycopg.Error as error:
                print(f"could not drop {args.db_name}: {error}")

    if not a_results and not b_results and not output.get("breakdown"):
        return 1
    if a_results or b_results:
        print_tables(a_results, b_results)
    disturbed = [
        r.notes.get("other_processes_pct", 0)
        for r in [*a_results, *b_results]
        if r.notes.get("other_processes_pct", 0) > 10
    ]
    if disturbed:
        print(
            f"WARNING: other processes used up to {max(disturbed)}% of the machine's CPU in {len(disturbed)} "
            "measurement(s); those numbers are disturbed"
        )
    summary: dict[str, Any] = {}
    single = [r for r in a_results if r.subscriptions == 1]
    if single:
        best = max(r.deliveries_per_s for r in single)
        summary["deliveries_per_s_one_subscription"] = best
        print(
            f"goal >= 1,000 deliveries/s (one worker process, one subscription): {best:.0f}/s -> "
            f"{'met' if best >= 1000 else 'NOT met'}"
        )
    if a_results:
        best_any = max(a_results, key=lambda r: r.deliveries_per_s)
        summary["deliveries_per_s_best"] = {"subscriptions": best_any.subscriptions, "value": best_any.deliveries_per_s}
        if best_any.subscriptions != 1:
            print(
                f"  best with {best_any.subscriptions} subscriptions: {best_any.deliveries_per_s:.0f}/s -> "
                f"{'met' if best_any.deliveries_per_s >= 1000 else 'NOT met'}"
            )
    for r in b_results:
        summary[f"e2e_p50_ms_at_{r.rate}"] = r.e2e_p50_ms
        print(
            f"goal p50 <= 20 ms at {r.rate}/s: {r.e2e_p50_ms:.1f} ms -> {'met' if r.e2e_p50_ms <= 20 else 'NOT met'}"
            f" (p99 {r.e2e_p99_ms:.1f} ms)"
        )
    if re.search(r"(ERROR|WARNING|CRITICAL)/|Traceback", worker_log):  # Celery's log lines, not its banner
        output["worker_log_tail"] = worker_log
        print("the worker logged warnings/errors (tail kept in the JSON)")
    output["throughput"] = [asdict(r) for r in a_results]
    output["latency"] = [asdict(r) for r in b_results]
    output["summary"] = summary
    return rt.save_results(output, "webhook_throughput", stamp, print_breakdown, print_profile)


if __name__ == "__main__":
    sys.exit(main())
