#!/usr/bin/env python
"""Webhook push delivery: deliveries/s from ONE Celery worker process, and publish -> webhook
latency at a steady publish rate, beside the floors measured in the same run.

On the harness (bench/harness.py: scratch database, CLI-made instance and key, the server
under test, keep-alive clients, CPU readers, py-spy, results file), plus Redis, a local
receiver process, one worker (`celery worker --pool=threads --concurrency=4`) and beat
(MESH_SWEEP_INTERVAL=1, the safety net that restarts lost wake-ups):

  A  throughput  --messages (5,000 x 1 KiB) pre-loaded into paused subscriptions' queues
                 (not timed); resumed through the API; the clock stops when the last push
                 arrives. For each count in --subscriptions (1,4), --repeat times: the spread.
  B  latency     open-loop publishes through REST (--rates 20,50/s, 1 s warm-up + 10 s) into
                 one subscribed queue: publish request sent -> receiver arrival, p50/p99
                 (CLOCK_MONOTONIC of the same machine on both ends), plus a control run into
                 a queue without a webhook.
  floors         a raw durable single-row INSERT, the raw SQL of a delivery (claim a round of
                 MESH_WEBHOOK_PREFETCH in one UPDATE ... RETURNING, then DELETE it, with
                 synchronous_commit off as the engine does), and a plain http.client POST
                 over a kept-alive connection to the same receiver.

    .venv/bin/python bench/webhook_throughput.py                       # uvicorn, ~4 minutes
    .venv/bin/python bench/webhook_throughput.py --skip-b --subscriptions 1 --repeat 5
    .venv/bin/python bench/webhook_throughput.py --profile             # py-spy on the worker

Not a test: nothing here asserts. Ctrl-C stops every process it started; the scratch
database is dropped unless --keep-db. Results: bench/results/webhook_throughput-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import http.client
import json
import os
import re
import signal
import socket
import statistics
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
import harness as rt  # noqa: E402

SEQ_DIGITS = 12  # every payload starts with its sequence number, so arrivals map to publishes
PLAIN_QUEUE = f"{rt.NAMESPACE}/plain"  # no webhook: the control for publish latency
PREFETCH = 50  # MESH_WEBHOOK_PREFETCH's default, for the raw-SQL floor


def queue_name(index: int) -> str:
    return f"{rt.NAMESPACE}/q{index}"


def hook_name(index: int) -> str:
    return f"{rt.NAMESPACE}/hook{index}"


def ms(values: list[float], fraction: float) -> float:
    return round(rt.percentile(sorted(values), fraction) * 1e3, 2) if values else float("nan")


# --------------------------------------------------------------------------------------
# The receiver: its own process, asyncio HTTP/1.1 with keep-alive; answers 200 with no body
# and records (arrival, path, x-message-id, sequence). Control paths: /stats, /dump, /reset.


def serve_receiver(port: int) -> None:
    arrivals: list[tuple[float, str, str, str]] = []
    parent = os.getppid()

    def reply(writer: asyncio.StreamWriter, body: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head[:-4].split(b"\r\n")
                target = lines[0].split(b" ", 2)[1]
                fields = dict(line.lower().split(b":", 1) for line in lines[1:] if b":" in line)
                length = int(fields.get(b"content-length", b"0"))
                body = await reader.readexactly(length) if length else b""
                if target.startswith(b"/hook"):
                    message_id = fields.get(b"x-message-id", b"").strip().decode()
                    arrivals.append((time.monotonic(), target.decode(), message_id, body[:SEQ_DIGITS].decode()))
                    reply(writer, b"")
                elif target == b"/stats":
                    reply(writer, json.dumps({"count": len(arrivals)}).encode())
                elif target == b"/dump":
                    reply(writer, json.dumps(arrivals).encode())
                else:  # /reset
                    arrivals.clear()
                    reply(writer, b"{}")
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()

    async def main() -> None:
        async with await asyncio.start_server(handle, rt.HOST, port, backlog=1024):
            while os.getppid() == parent:  # stops when the benchmark that started it is gone
                await asyncio.sleep(0.5)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(main())


# --------------------------------------------------------------------------------------
# CPU per role: the harness's snapshot (PostgreSQL, machine, database counters) plus the
# worker, beat, receiver, servers and Redis.


@dataclass
class Snap:
    base: rt.Snapshot
    roles: dict[str, dict[int, float]]


def take(mesh: HookMesh) -> Snap:
    roles = {role: {pid: rt._proc_cpu(pid) for pid in pids} for role, pids in mesh.roles().items()}
    roles["redis"] = rt.processes_cpu("redis-server")
    return Snap(rt.snapshot([], mesh.dsn), roles)


def cpu_notes(before: Snap, after: Snap, ops: int) -> dict[str, Any]:
    def per_op(seconds: float) -> float | None:
        return round(seconds * 1e6 / ops, 1) if ops else None

    roles = {role: rt._delta(pids, after.roles.get(role, {})) for role, pids in before.roles.items()}
    postgres = rt._delta(before.base.postgres, after.base.postgres)
    busy = after.base.machine_busy - before.base.machine_busy
    total = max(1e-9, after.base.machine_total - before.base.machine_total)
    transactions = after.base.db_transactions - before.base.db_transactions
    ours = sum(roles.values()) + postgres + after.base.client - before.base.client  # client: this process
    return {
        **{f"{role}_us_per_op": per_op(cpu) for role, cpu in roles.items()},
        "postgres_us_per_op": per_op(postgres),
        "worker_cpu_pct": round(100 * roles.get("worker", 0.0) * len(os.sched_getaffinity(0)) / total, 1),
        "machine_busy_pct": round(100 * busy / total, 1),
        # CPU of anything else on the machine: above a few percent, the numbers are disturbed.
        "other_processes_pct": round(100 * max(0.0, busy - ours) / total, 1),
        "db_transactions_per_op": round(transactions / ops, 3) if ops else None,
    }


# --------------------------------------------------------------------------------------
# The system under test


class HookMesh(rt.Mesh):
    """The harness's Mesh (scratch DB, instance, key, the server) plus the receiver, one
    Celery worker and beat, and the API calls the scenarios make."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.extra: dict[str, subprocess.Popen] = {}
        self.worker_name = f"bench-hooks-{os.getpid()}@{socket.gethostname()}"
        self.receiver = httpx.Client(base_url=f"http://{rt.HOST}:{args.receiver_port}", timeout=30)
        self.api: httpx.Client | None = None

    def env(self, port: int | None = None, server: bool = False) -> dict[str, str]:
        env = super().env(port, server=True)  # --env reaches every process
        env.update(REDIS_URL=self.args.redis_url, MESH_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8",
                   MESH_SWEEP_INTERVAL=str(self.args.sweep_interval),
                   # Resume is scenario A's starting gun; the slow start would measure its ramp.
                   MESH_WEBHOOK_RESUME_RATE="0")
        return env

    def spawn(self, role: str, command: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.var_dir / f"{role}.log", "ab") as log:
            self.extra[role] = subprocess.Popen(command, cwd=rt.ROOT, env=env or self.env(), stdout=log,
                                                stderr=subprocess.STDOUT)

    def log_tail(self, role: str) -> str:
        path = self.var_dir / f"{role}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def wait(self, role: str, ready: Any, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.extra[role].poll() is not None:
                raise SystemExit(f"the {role} exited:\n{self.log_tail(role)}")
            try:
                if ready():
                    return
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(0.1)
        raise SystemExit(f"the {role} was not ready within {seconds:g} s:\n{self.log_tail(role)}")

    def start_receiver(self) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--serve-receiver", str(self.args.receiver_port)]
        self.spawn("receiver", command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.wait("receiver", lambda: self.receiver.get("/stats"), 20)

    def start_worker(self) -> None:
        from celery import Celery
        from redis import Redis

        Redis.from_url(self.args.redis_url).delete("celery", "unacked", "unacked_index")  # a last run's tasks
        celery = [str(rt.BIN / "celery"), "-A", "meshsite"]
        self.spawn("worker", [*celery, "worker", "--pool=threads", f"--concurrency={self.args.concurrency}",
                              "--loglevel=WARNING", "-n", self.worker_name, "--without-gossip", "--without-mingle"])
        app = Celery(broker=self.args.redis_url)
        try:
            self.wait("worker", lambda: app.control.ping(destination=[self.worker_name], timeout=1.0), 60)
        finally:
            app.close()
        if not self.args.no_beat:
            self.spawn("beat", [*celery, "beat", "--loglevel=WARNING", "--schedule", str(self.var_dir / "beat")])

    def roles(self) -> dict[str, list[int]]:
        return {"server": self.pids, **{role: [process.pid] for role, process in self.extra.items()}}

    def close(self) -> None:
        for process in self.extra.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.extra.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.receiver.close()
        if self.api is not None:
            self.api.close()
        super().close()

    def call(self, method: str, path: str, **kwargs: Any) -> None:
        assert self.api is not None
        response = self.api.request(method, path, **kwargs)
        if response.status_code not in (200, 201):
            raise SystemExit(f"{method} {path} answered {response.status_code}: {response.text[:500]}")

    def create_hooks(self, token: str, count: int) -> None:
        self.api = httpx.Client(base_url=f"http://{rt.HOST}:{self.ports[0]}",
                                headers={"Authorization": f"Bearer {token}"}, timeout=30)
        self.call("PUT", f"{rt.MANAGEMENT}/queues/{rt.enc(PLAIN_QUEUE)}")
        for index in range(count):
            self.call("PUT", f"{rt.MANAGEMENT}/queues/{rt.enc(queue_name(index))}")
            endpoint = f"http://{rt.HOST}:{self.args.receiver_port}/hook/{index}"
            self.call("POST", f"{rt.REST}/subscriptions", json={
                "name": hook_name(index), "address": f"queue:{queue_name(index)}", "qos": 1,
                "pushConfig": {"type": "webhook", "endpoint": endpoint, "exemptHandshake": True}})
            self.set_state(index, "pause")

    def set_state(self, index: int, action: str) -> None:
        self.call("PUT", f"{rt.REST}/subscriptions/{rt.enc(hook_name(index))}/state", json={"action": action})

    def preload(self, plan: dict[str, tuple[int, int]]) -> None:
        """Messages into paused queues through the ORM (not timed), then ANALYZE: a run must
        not depend on whether autovacuum has looked at the table yet."""
        self.manage("shell", "-c", PRELOAD.format(plan=json.dumps(plan), size=self.args.payload))
        self.execute("ANALYZE messaging_message")

    def execute(self, statement: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[call-overload]

    def queued(self) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM messaging_message").fetchone()
        return int(row[0]) if row else 0

    def received(self) -> int:
        return int(self.receiver.get("/stats").json()["count"])

    def arrivals(self) -> list[list[Any]]:
        return list(self.receiver.get("/dump").json())


PRELOAD = """
import json, os
from datetime import timedelta
from django.utils import timezone
from messaging.models import Message, Queue
pad = os.urandom(max(0, {size} - 12))
now = timezone.now()
for name, (start, count) in json.loads('{plan}').items():
    queue = Queue.objects.get(name=name)
    Message.objects.bulk_create([
        Message(queue=queue, payload=b"%012d" % (start + i) + pad, size=12 + len(pad), qos=1,
                content_type="application/octet-stream", address="queue:" + name,
                created_at=now, expires_at=now + timedelta(days=1)) for i in range(count)], batch_size=1000)
"""


# --------------------------------------------------------------------------------------
# A: drain a pre-loaded backlog


@dataclass
class Throughput:
    subscriptions: int
    delivered: int
    duplicates: int
    deliveries_per_s: float
    steady_per_s: float  # between the 10th and the 90th percentile arrival
    first_arrival_ms: float
    gap_p50_ms: float
    gap_p99_ms: float
    notes: dict[str, Any] = field(default_factory=dict)


def scenario_a(mesh: HookMesh, subscriptions: int, seq: int, stop: threading.Event) -> Throughput:
    messages = mesh.args.messages
    share = [messages // subscriptions + (index < messages % subscriptions) for index in range(subscriptions)]
    mesh.preload({queue_name(i): (seq + sum(share[:i]), share[i]) for i in range(subscriptions)})
    mesh.receiver.get("/reset")
    before, started = take(mesh), time.monotonic()
    for index in range(subscriptions):
        mesh.set_state(index, "resume")
    while not stop.is_set() and time.monotonic() < started + mesh.args.a_timeout and mesh.received() < messages:
        stop.wait(0.05)
    after = take(mesh)
    for index in range(subscriptions):
        mesh.set_state(index, "pause")
    arrivals = mesh.arrivals()
    times = sorted(row[0] for row in arrivals)
    delivered = len(times)
    seconds = (times[-1] - started) if delivered >= messages else time.monotonic() - started
    lo, hi = int(0.1 * (delivered - 1)), int(0.9 * (delivered - 1))
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    deadline = time.monotonic() + 10  # the last round's settle commits just after its pushes
    while mesh.queued() and time.monotonic() < deadline:
        time.sleep(0.1)
    return Throughput(
        subscriptions=subscriptions, delivered=delivered, duplicates=delivered - len({row[2] for row in arrivals}),
        deliveries_per_s=round(delivered / seconds, 1),
        steady_per_s=round((hi - lo) / (times[hi] - times[lo]), 1) if delivered > 10 else 0.0,
        first_arrival_ms=round((times[0] - started) * 1e3, 1) if times else float("nan"),
        gap_p50_ms=ms(gaps, 0.5), gap_p99_ms=ms(gaps, 0.99),
        notes={**cpu_notes(before, after, delivered), "left_in_queues": mesh.queued()},
    )


# --------------------------------------------------------------------------------------
# B: a steady publish rate through REST


async def steady_publish(mesh: HookMesh, token: str, rate: int, seq: int, queue: str,
                         stop: threading.Event) -> tuple[dict[int, tuple[float, float, bool]], Snap, Snap]:
    """Open loop: message i is sent at start + i/rate whatever happened to the others, over
    up to 32 keep-alive connections. Returns seq -> (sent, answered, in the measured window)."""
    args, loop = mesh.args, asyncio.get_running_loop()
    idle = [rt.Connection(mesh.ports[0]) for _ in range(4)]
    opened, free = len(idle), asyncio.Condition()
    pad = os.urandom(max(0, args.payload - SEQ_DIGITS))
    path = f"{rt.REST}/queues/{rt.enc(queue)}/messages"
    headers = {"Authorization": f"Bearer {token}", "x-qos": "1", "Content-Type": "application/octet-stream"}
    record: dict[int, tuple[float, float, bool]] = {}
    errors: collections.Counter[str] = collections.Counter()
    start = loop.time() + 0.2
    measure_from, total = start + args.warmup, int(rate * (args.warmup + args.duration))
    tasks: set[asyncio.Task] = set()

    async def one(number: int, due: float, conn: rt.Connection) -> None:
        sent = loop.time()
        try:
            async with asyncio.timeout(rt.REQUEST_TIMEOUT):
                status, _, body = await conn.request(rt.build_request("POST", path, headers, b"%012d" % number + pad))
            if status == 204:
                record[number] = (sent, loop.time(), due >= measure_from)
            else:
                errors[f"{status} {body[:100]!r}"] += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
            errors[type(error).__name__] += 1
            conn.close()
        async with free:
            idle.append(conn)
            free.notify()

    snaps: list[Snap] = []
    for i in range(total):
        due = start + i / rate
        if stop.is_set():
            break
        if not snaps and due >= measure_from:
            snaps.append(await asyncio.to_thread(take, mesh))
        await asyncio.sleep(max(0.0, due - loop.time()))
        async with free:
            if not idle and opened < 32:
                idle.append(rt.Connection(mesh.ports[0]))
                opened += 1
            await free.wait_for(lambda: bool(idle))
            conn = idle.pop()
        task = asyncio.create_task(one(seq + i, due, conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    snaps.append(await asyncio.to_thread(take, mesh))
    if tasks:
        await asyncio.wait(tasks, timeout=rt.REQUEST_TIMEOUT)
    for conn in idle:
        conn.close()
    if errors:
        print(f"    publish errors: {dict(errors.most_common(3))}")
    return record, snaps[0], snaps[-1]


def scenario_b(mesh: HookMesh, token: str, rate: int, seq: int, stop: threading.Event,
               queue: str = queue_name(0)) -> dict[str, Any]:
    mesh.receiver.get("/reset")
    record, before, after = asyncio.run(steady_publish(mesh, token, rate, seq, queue, stop))
    measured = {number: row for number, row in record.items() if row[2]}
    publish = [answered - sent for sent, answered, _ in measured.values()]
    result: dict[str, Any] = {"rate": rate, "published": len(measured), "publish_p50_ms": ms(publish, 0.5),
                              "publish_p99_ms": ms(publish, 0.99)}
    if queue == PLAIN_QUEUE:  # the control: no webhook
        mesh.execute(f"DELETE FROM messaging_message WHERE address = 'queue:{PLAIN_QUEUE}'")
        return {**result, **cpu_notes(before, after, len(measured))}
    deadline = time.monotonic() + mesh.args.drain
    while not stop.is_set() and time.monotonic() < deadline and mesh.received() < len(record):
        stop.wait(0.1)
    first: dict[int, float] = {}
    for arrived, _path, _id, number in mesh.arrivals():
        first.setdefault(int(number), arrived)
    e2e = [first[number] - sent for number, (sent, _, _) in measured.items() if number in first]
    after_answer = [first[number] - answered for number, (_, answered, _) in measured.items() if number in first]
    return {**result, "delivered": len(e2e), "stranded": sum(1 for number in record if number not in first),
            "e2e_p50_ms": ms(e2e, 0.5), "e2e_p90_ms": ms(e2e, 0.9), "e2e_p99_ms": ms(e2e, 0.99),
            "e2e_max_ms": ms(e2e, 1.0), "after_answer_p50_ms": ms(after_answer, 0.5),
            **cpu_notes(before, after, len(measured))}


# --------------------------------------------------------------------------------------
# Floors, in this process without Django: what a delivery's SQL and its HTTP POST cost raw.


def floors(mesh: HookMesh, stop: threading.Event) -> dict[str, Any]:
    payload = b"x" * mesh.args.payload
    insert = rt.raw_insert(mesh.dsn, 1, 0.5, 3.0, payload, stop)
    n = mesh.args.floor_n
    mesh.preload({queue_name(0): (0, n)})
    done, began = 0, time.perf_counter()
    with psycopg.connect(mesh.dsn, autocommit=True) as conn:
        queue_id = conn.execute("SELECT id FROM messaging_queue WHERE name = %s", [queue_name(0)]).fetchone()
        while rows := _claim_and_delete(conn, queue_id[0] if queue_id else 0):
            done += rows
    per_delivery_sql = (time.perf_counter() - began) / max(1, done)
    plain = http.client.HTTPConnection(rt.HOST, mesh.args.receiver_port)
    headers = {"Content-Type": "application/octet-stream", "x-message-id": "floor"}
    began = time.perf_counter()
    for _ in range(n):
        plain.request("POST", "/hook/floor", body=payload, headers=headers)
        plain.getresponse().read()
    per_post = (time.perf_counter() - began) / n
    plain.close()
    mesh.receiver.get("/reset")
    return {"raw_insert_per_s": insert.ops_per_s, "raw_insert_p50_ms": insert.p50_ms,
            "delivery_sql_us": round(per_delivery_sql * 1e6, 1), "kept_alive_post_us": round(per_post * 1e6, 1),
            "floor_deliveries_per_s": round(1 / (per_delivery_sql + per_post), 1)}


def _claim_and_delete(conn: psycopg.Connection, queue_id: int) -> int:
    m = "messaging_message"
    with conn.transaction():
        conn.execute("SET LOCAL synchronous_commit TO OFF")
        rows = conn.execute(
            f"UPDATE {m} SET locked_until = now() + interval '45 seconds', claim_id = gen_random_uuid(),"  # noqa: S608
            f" claimed_by = 'floor', delivery_count = delivery_count + 1 WHERE id IN (SELECT id FROM {m}"
            " WHERE queue_id = %s AND (locked_until IS NULL OR locked_until <= now()) ORDER BY id LIMIT %s"
            " FOR UPDATE SKIP LOCKED) RETURNING claim_id, payload", [queue_id, PREFETCH]).fetchall()
    if rows:
        with conn.transaction():
            conn.execute("SET LOCAL synchronous_commit TO OFF")
            conn.execute(f"DELETE FROM {m} WHERE claim_id = ANY(%s)", [[row[0] for row in rows]])  # noqa: S608
    return len(rows)


# --------------------------------------------------------------------------------------
# --profile: py-spy on the worker during one extra scenario-A run (pool=threads: its threads
# live for the whole run, so py-spy sees them all).

ENGINE_PHASES = [  # innermost frame matching wins
    ("push: connect + name check", r"^(connect|create_connection|resolve_public|parse_url) "),
    ("push: request + response", r"^(Session\.request|Session\._exchange) "),
    ("push: headers, signing, auth", r"^push "),
    ("claim round", r"^_claim "),
    ("settle round", r"^_settle "),
    ("run start and end", r"^(_runnable|_take_lease|_Run\.end|_has_available) "),
    ("run loop", r"^(webhook_deliver_batch|_Run\.push_round) "),
]
IDLE = re.compile(r"^(Condition\.wait|Event\.wait|_worker|_epoll\.poll|poll|select|sleep|Queue\.get|wait) ")


def profile_worker(mesh: HookMesh, seq: int, stop: threading.Event, stamp: str) -> dict[str, Any]:
    py_spy = rt.find_py_spy()
    if not py_spy:
        return {}
    raw, svg = rt.RESULTS / f"profile-webhook-worker-{stamp}.txt", rt.RESULTS / f"profile-webhook-worker-{stamp}.svg"
    spies = rt.start_py_spy(py_spy, mesh.extra["worker"].pid, 250, raw, svg)
    try:
        time.sleep(1.0)  # py-spy attaches
        run = scenario_a(mesh, 1, seq, stop)
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for spy in spies:
            spy.wait(timeout=60)
    if not raw.exists():
        return {"error": "py-spy wrote no profile (it needs ptrace permission)"}
    phases: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")[1:]
        if not frames or not count.isdigit() or IDLE.search(frames[-1]):
            continue
        in_engine = any(frame.startswith("webhook_deliver_batch ") for frame in frames)
        phase = rt._phase(frames, ENGINE_PHASES, "other") if in_engine else "outside the engine (Celery, kombu)"
        phases[phase] += int(count)
        leaves[frames[-1].split(" (")[0]] += int(count)
    per = 1e6 / 250 / max(1, run.delivered)  # wall µs per delivery, busy samples only
    return {"run": asdict(run), "busy_us_per_delivery": {k: round(v * per, 1) for k, v in phases.most_common()},
            "top_leaves_us_per_delivery": {k: round(v * per, 1) for k, v in leaves.most_common(15)},
            "files": [str(raw.relative_to(rt.ROOT)), str(svg.relative_to(rt.ROOT))]}


# --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ints = lambda text: [int(x) for x in text.split(",")]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--serve-receiver", type=int, metavar="PORT", help=argparse.SUPPRESS)
    add("--messages", type=int, default=5000, help="scenario A backlog (5000)")
    add("--subscriptions", type=ints, default=[1, 4], help="scenario A subscription counts (1,4)")
    add("--repeat", type=int, default=1, help="scenario A runs per count, for the spread (1)")
    add("--a-timeout", type=float, default=240.0, help="scenario A gives up after (240 s)")
    add("--rates", type=ints, default=[20, 50], help="scenario B publish rates per second (20,50)")
    add("--duration", type=float, default=10.0, help="scenario B measured seconds per rate (10)")
    add("--warmup", type=float, default=1.0, help="scenario B unmeasured seconds first (1)")
    add("--drain", type=float, default=60.0, help="scenario B waits at most this for the last pushes (60 s)")
    add("--control-rate", type=int, default=20, help="B's control rate into a queue without webhook (0: off)")
    add("--skip-a", action="store_true")
    add("--skip-b", action="store_true")
    add("--skip-floors", action="store_true")
    add("--floor-n", type=int, default=2000, help="messages / POSTs for the floors (2000)")
    add("--payload", type=int, default=1024, help="message size in bytes (1024)")
    add("--concurrency", type=int, default=4, help="worker threads (4)")
    add("--no-beat", action="store_true", help="no celery beat: only wake-ups start deliveries")
    add("--sweep-interval", type=int, default=1, help="MESH_SWEEP_INTERVAL for beat (1)")
    add("--server", choices=rt.SERVERS, default="uvicorn", help="the server publishes go through (uvicorn)")
    add("--redis-url", default="redis://127.0.0.1:6379/11", help="broker (db 11: not the test suite's)")
    add("--profile", action="store_true", help="also sample the worker with py-spy in one extra A run")
    add("--env", dest="server_env", action="append", default=[], metavar="NAME=VALUE",
        help="extra environment for the server, the worker and beat (what-if runs)")
    add("--db-url-query", default="", help="query string appended to DATABASE_URL (what-if runs)")
    add("--port", type=int, default=8760, help="server port (8760)")
    add("--receiver-port", type=int, default=8790, help="receiver port (8790)")
    add("--pg-host", default="127.0.0.1")
    add("--pg-port", type=int, default=5432)
    add("--pg-user", default="postgres")
    add("--db-name", default="meshsite_bench_hooks", help="scratch database, dropped and recreated")
    add("--keep-db", action="store_true")
    args = parser.parse_args()
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", args.db_name) or any("=" not in item for item in args.server_env):
        parser.error("--db-name must be a lower-case identifier, --env NAME=VALUE")
    return args


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def measure(mesh: HookMesh, token: str, output: dict[str, Any], stop: threading.Event, stamp: str) -> None:
    args, seq = mesh.args, 0
    for subscriptions in [] if args.skip_a else args.subscriptions:
        for attempt in range(args.repeat):
            if stop.is_set():
                return
            run = scenario_a(mesh, subscriptions, seq, stop)
            seq += args.messages
            output["throughput"].append(asdict(run))
            print(f"A {subscriptions} sub(s) #{attempt + 1}: {run.deliveries_per_s:.0f}/s"
                  f" (steady {run.steady_per_s:.0f}),"
                  f" {run.delivered} arrived, {run.duplicates} twice; worker {run.notes['worker_us_per_op']} µs/d"
                  f" ({run.notes['worker_cpu_pct']}% of a core), pg {run.notes['postgres_us_per_op']} µs/d,"
                  f" gap p50/p99 {run.gap_p50_ms}/{run.gap_p99_ms} ms, other {run.notes['other_processes_pct']}%",
                  flush=True)
    if not args.skip_b:
        mesh.set_state(0, "resume")
        for rate in args.rates:
            if not stop.is_set():
                result = scenario_b(mesh, token, rate, seq, stop)
                seq += int(rate * (args.warmup + args.duration)) + 1
                output["latency"].append(result)
                print(f"B {rate}/s: e2e p50 {result['e2e_p50_ms']} ms, p99 {result['e2e_p99_ms']} ms; publish p50"
                      f" {result['publish_p50_ms']} ms; {result['stranded']} stranded;"
                      f" other {result['other_processes_pct']}%", flush=True)
        mesh.set_state(0, "pause")
        if args.control_rate and not stop.is_set():
            output["control"] = scenario_b(mesh, token, args.control_rate, seq, stop, PLAIN_QUEUE)
            seq += int(args.control_rate * (args.warmup + args.duration)) + 1
            print(f"control {args.control_rate}/s, no webhook: publish p50 {output['control']['publish_p50_ms']} ms")
    if args.profile and not stop.is_set():
        output["profile"] = profile_worker(mesh, seq, stop, stamp)
        seq += args.messages
    if not args.skip_floors and not stop.is_set():
        output["floors"] = floors(mesh, stop)
        print(f"floors: {output['floors']}")


def summary(output: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for count in sorted({run["subscriptions"] for run in output["throughput"]}):
        rates = [run["deliveries_per_s"] for run in output["throughput"] if run["subscriptions"] == count]
        result[f"deliveries_per_s_{count}_subscriptions"] = spread(rates)
    for run in output["latency"]:
        result[f"e2e_p50_ms_at_{run['rate']}"] = run["e2e_p50_ms"]
    one = result.get("deliveries_per_s_1_subscriptions", {}).get("median")
    p50 = result.get("e2e_p50_ms_at_50")
    if one is not None:
        print(f"goal >= 2,000 deliveries/s, one subscription: median {one:.0f}/s ->"
              f" {'met' if one >= 2000 else 'NOT met'}")
    if p50 is not None:
        print(f"goal p50 <= 10 ms at 50/s: {p50:.1f} ms -> {'met' if p50 <= 10 else 'NOT met'}")
    disturbed = [r["notes"]["other_processes_pct"] for r in output["throughput"]]
    disturbed += [r["other_processes_pct"] for r in output["latency"]]
    if disturbed and max(disturbed) > 10:
        print(f"WARNING: other processes used up to {max(disturbed)}% of the machine: the numbers are disturbed")
    return result


def main() -> int:
    args = parse_args()
    if args.serve_receiver:
        serve_receiver(args.serve_receiver)
        return 0
    stop = rt.stop_on_signals()
    rt.RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    mesh = HookMesh(args)
    output: dict[str, Any] = {"config": vars(args), "throughput": [], "latency": []}
    try:
        print("setting up: database, migrate, instance, key, server, receiver, worker ...", flush=True)
        mesh.create_database()
        output["machine"] = {**rt.machine_info(mesh.dsn), "loadavg_at_start": os.getloadavg()}
        mesh.start(1)
        token = mesh.token()
        mesh.start_receiver()
        mesh.create_hooks(token, max([1, *([] if args.skip_a else args.subscriptions)]))
        mesh.start_worker()
        measure(mesh, token, output, stop, stamp)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping", flush=True)
    finally:
        worker_log = mesh.log_tail("worker")
        mesh.close()
        if not args.keep_db:
            mesh.drop_database()
    if re.search(r"(ERROR|WARNING|CRITICAL)/|Traceback", worker_log):
        output["worker_log_tail"] = worker_log
        print("the worker logged warnings or errors (tail kept in the JSON)")
    output["summary"] = summary(output)
    return rt.save_results(output, "webhook_throughput", stamp, print, lambda p: print(json.dumps(p, indent=1)))


if __name__ == "__main__":
    sys.exit(main())
