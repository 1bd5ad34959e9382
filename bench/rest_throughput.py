#!/usr/bin/env python
"""REST throughput of meshsite on PostgreSQL, beside the raw PostgreSQL insert rate.

Self-contained: (re)creates a scratch database, migrates it, creates an instance and a
service key with the CLI, starts Daphne, fetches a token, creates a queue, and measures for
each client concurrency (default 1 and 8) during a fixed window:

  publish       POST /messagingrest/v1/queues/{q}/messages, x-qos 1, 1 KiB octet-stream -> 204
  consume+ack   POST .../messages/consumption (x-qos 1) -> 200, then
                POST .../messages/{id}/acknowledgement -> 200   (one op = the pair)
  raw insert    durable single-row INSERT in autocommit (synchronous_commit on) into
                (id bigserial, queue_id bigint, payload bytea, created_at timestamptz)
                from the same number of connections (threads, psycopg 3)

and prints ops/s, latency p50/p99 and CPU per op, plus publish / raw-insert ratios.
Results go to bench/results/ as JSON (gitignored). Not a test: nothing here asserts.

    .venv/bin/python bench/rest_throughput.py                 # make bench
    .venv/bin/python bench/rest_throughput.py --duration 5 --servers 2
    .venv/bin/python bench/rest_throughput.py --breakdown --profile   # where a publish spends its time

Ctrl-C (or SIGTERM) stops it at any point; the Daphne processes it started are stopped and
the scratch database is dropped unless --keep-db.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
NAMESPACE = "b/e/n"
QUEUE = f"{NAMESPACE}/bench"
REST = "/messagingrest/v1"
MANAGEMENT = "/hub/rest/api/v1/management/messaging"
HOST = "127.0.0.1"


def enc(name: str) -> str:
    return quote(name, safe="")


# --------------------------------------------------------------------------------------
# Measurement bookkeeping


@dataclass
class Snapshot:
    """CPU seconds of the processes that matter, of the whole machine, and the database's
    counters (transactions and sessions of the scratch database), at one moment."""

    server: dict[int, float]
    postgres: dict[int, float]
    client: float
    machine_busy: float
    machine_total: float
    db_transactions: int
    db_sessions: int


TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int | str) -> float:
    """utime + stime + cutime + cstime: a process's CPU plus that of its reaped children (so
    PostgreSQL backends that exit during a window are still counted, through the postmaster)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return sum(int(value) for value in fields[11:15]) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _postgres_cpu() -> dict[int, float]:
    cpu = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as handle:
                    if handle.read().strip() == "postgres":
                        cpu[int(entry)] = _proc_cpu(entry)
            except OSError:
                pass
    return cpu


def snapshot(server_pids: list[int], dsn: str) -> Snapshot:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback, sessions FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    times = os.times()
    return Snapshot(
        server={pid: _proc_cpu(pid) for pid in server_pids},
        postgres=_postgres_cpu(),
        client=times.user + times.system,
        machine_busy=(sum(values[:8]) - idle) / TICK,
        machine_total=sum(values[:8]) / TICK,
        db_transactions=int(row[0]) if row else 0,
        db_sessions=int(row[1]) if row else 0,
    )


def _delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass
class Result:
    scenario: str
    concurrency: int
    servers: int  # Daphne processes (0 for the raw PostgreSQL baseline)
    ops: int
    seconds: float
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    notes: dict[str, Any] = field(default_factory=dict)


def summarize(
    scenario: str, concurrency: int, servers: int, latencies: list[float], errors: int, seconds: float,
    before: Snapshot, after: Snapshot, notes: dict[str, Any] | None = None,
) -> Result:
    latencies.sort()
    ops = len(latencies)

    def per_op(value: float) -> float | None:
        return round(value / ops, 2 if value < ops else 1) if ops else None

    server = _delta(before.server, after.server)
    postgres = _delta(before.postgres, after.postgres)
    client = after.client - before.client
    busy = after.machine_busy - before.machine_busy
    total = max(1e-9, after.machine_total - before.machine_total)
    measured = {
        "server_us_per_op": per_op(server * 1e6),
        "postgres_us_per_op": per_op(postgres * 1e6),
        "client_us_per_op": per_op(client * 1e6),
        "machine_busy_pct": round(100 * busy / total, 1),
        # CPU used by anything else on the machine: non-zero means the numbers were disturbed.
        "other_processes_pct": round(100 * max(0.0, busy - server - postgres - client) / total, 1),
        "db_transactions_per_op": per_op(after.db_transactions - before.db_transactions),
        "db_sessions_per_op": per_op(after.db_sessions - before.db_sessions),
    }
    return Result(
        scenario=scenario, concurrency=concurrency, servers=servers, ops=ops, seconds=round(seconds, 3),
        ops_per_s=round(ops / seconds, 1) if seconds else 0.0,
        p50_ms=round(percentile(latencies, 0.50) * 1e3, 3), p99_ms=round(percentile(latencies, 0.99) * 1e3, 3),
        errors=errors, notes={**measured, **(notes or {})},
    )


# --------------------------------------------------------------------------------------
# Raw PostgreSQL baseline


RAW_TABLE = "bench_raw_insert"


def raw_insert(dsn: str, concurrency: int, warmup: float, duration: float, payload: bytes,
               stop: threading.Event) -> Result:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {RAW_TABLE}")
    start = time.perf_counter() + 0.3  # all connections open before the clock runs
    measure_from = start + warmup
    deadline = measure_from + duration
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency

    def work(slot: int) -> None:
        mine = latencies[slot]
        with psycopg.connect(dsn, autocommit=True, options="-c statement_timeout=30000") as conn:
            conn.execute("SET synchronous_commit TO on")
            cursor = conn.cursor()
            sql = f"INSERT INTO {RAW_TABLE} (queue_id, payload, created_at) VALUES (%s, %s, now())"
            while time.perf_counter() < start:
                time.sleep(0.001)
            while not stop.is_set():
                began = time.perf_counter()
                if began >= deadline:
                    break
                try:
                    cursor.execute(sql, (1, payload), prepare=True)
                except psycopg.Error:
                    errors[slot] += 1
                    continue
                if began >= measure_from:
                    mine.append(time.perf_counter() - began)

    threads = [threading.Thread(target=work, args=(slot,), daemon=True) for slot in range(concurrency)]
    for thread in threads:
        thread.start()
    _sleep_until(measure_from, stop)
    before = snapshot([], dsn)
    _sleep_until(deadline, stop)
    after = snapshot([], dsn)
    for thread in threads:
        thread.join()
    merged = [value for chunk in latencies for value in chunk]
    return summarize("raw insert", concurrency, 0, merged, sum(errors), duration, before, after)


def _sleep_until(moment: float, stop: threading.Event) -> None:
    while not stop.is_set():
        left = moment - time.perf_counter()
        if left <= 0:
            return
        stop.wait(min(left, 0.2))


# --------------------------------------------------------------------------------------
# A minimal HTTP/1.1 keep-alive client on asyncio: a few tens of µs of client CPU per
# request, so the client takes little of the 2 cores away from the server it measures.


REQUEST_TIMEOUT = 30.0  # seconds; a request that takes longer counts as an error


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def request(self, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            length = int(headers.get(b"content-length", b"0"))
            body = await self.reader.readexactly(length) if length else b""
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, headers, body


def build_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Client:
    def __init__(self, token: str, payload: bytes) -> None:
        self.auth = {"Authorization": f"Bearer {token}"}
        base = f"{REST}/queues/{enc(QUEUE)}/messages"
        self.ack_prefix = f"{base}/"
        self.publish_raw = build_request(
            "POST", base, {**self.auth, "x-qos": "1", "Content-Type": "application/octet-stream"}, payload
        )
        self.consume_raw = build_request("POST", f"{base}/consumption", {**self.auth, "x-qos": "1"})

    async def publish(self, conn: Connection) -> str | None:
        status, _, body = await conn.request(self.publish_raw)
        return None if status == 204 else f"publish {status} {body[:200]!r}"

    async def consume_ack(self, conn: Connection) -> str | None:
        status, headers, body = await conn.request(self.consume_raw)
        if status == 204:
            return "empty"
        if status != 200:
            return f"consume {status} {body[:200]!r}"
        message_id = headers[b"x-message-id"].decode()
        ack = build_request("POST", f"{self.ack_prefix}{enc(message_id)}/acknowledgement", self.auth)
        status, _, body = await conn.request(ack)
        return None if status in (200, 204) else f"ack {status} {body[:200]!r}"


async def http_phase(
    scenario: str, op_name: str, client: Client, ports: list[int], concurrency: int, warmup: float,
    duration: float, mesh: Mesh, stop: threading.Event,
) -> Result:
    connections = [Connection(ports[slot % len(ports)]) for slot in range(concurrency)]
    await asyncio.gather(*(conn.open() for conn in connections))
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + warmup
    deadline = measure_from + duration
    latencies: list[float] = []
    failures: collections.Counter[str] = collections.Counter()
    operation = getattr(client, op_name)

    async def work(conn: Connection) -> None:
        while not stop.is_set():
            began = loop.time()
            if began >= deadline:
                return
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    failure = await operation(conn)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as error:
                failure = f"{type(error).__name__}: {error}"
                conn.close()
            if began < measure_from:
                continue
            if failure is None:
                latencies.append(loop.time() - began)
            else:
                failures[failure[:120]] += 1
                if failure == "empty":
                    await asyncio.sleep(0.01)

    async def snapshots() -> tuple[Snapshot, Snapshot]:
        await asyncio.sleep(max(0.0, measure_from - loop.time()))
        first = await asyncio.to_thread(snapshot, mesh.pids, mesh.dsn)
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        return first, await asyncio.to_thread(snapshot, mesh.pids, mesh.dsn)

    peak_backends = 0
    watcher: list[psycopg.Connection] = []

    def backends() -> int:
        if not watcher:  # one connection for the whole phase, so it adds no session churn
            watcher.append(psycopg.connect(mesh.dsn, autocommit=True))
        row = watcher[0].execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()").fetchone()
        return int(row[0]) - 1 if row else 0  # less this one

    async def watch_backends() -> None:
        # Open sessions on the scratch database, sampled: connection churn shows up here.
        nonlocal peak_backends
        try:
            while loop.time() < deadline and not stop.is_set():
                peak_backends = max(peak_backends, await asyncio.to_thread(backends))
                await asyncio.sleep(0.25)
        finally:
            for conn in watcher:
                conn.close()

    try:
        window = asyncio.ensure_future(snapshots())
        await asyncio.gather(window, watch_backends(), *(work(conn) for conn in connections))
        before, after = window.result()
    finally:
        for conn in connections:
            conn.close()
    errors = sum(count for reason, count in failures.items() if reason != "empty")
    notes: dict[str, Any] = {"peak_db_sessions": peak_backends}
    if failures:
        notes["failures"] = dict(failures.most_common(5))
    return summarize(scenario, concurrency, len(ports), latencies, errors, duration, before, after, notes)


# --------------------------------------------------------------------------------------
# The system under test


class Mesh:
    """A scratch database, the CLI-created instance and key, and N Daphne processes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.admin_dsn = f"postgresql://{args.pg_user}@{args.pg_host}:{args.pg_port}/postgres"
        self.dsn = f"postgresql://{args.pg_user}@{args.pg_host}:{args.pg_port}/{args.db_name}"
        self.var_dir = Path(tempfile.mkdtemp(prefix="meshsite-bench-"))
        self.processes: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self.key: dict[str, Any] = {}

    def env(self, port: int | None = None, server: bool = False) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
        url = self.dsn.replace("postgresql://", "postgres://", 1)
        if server and self.args.db_url_query:
            url += "?" + self.args.db_url_query
        env.update(
            DATABASE_URL=url,
            MESH_VAR_DIR=str(self.var_dir),
            MESH_PUBLIC_URL=f"http://{HOST}:{port or self.args.port}",
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        if server:
            env.update(item.split("=", 1) for item in self.args.server_env)
        return env

    def manage(self, *argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *argv], cwd=ROOT, env=self.env(), capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"manage.py {' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def create_database(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.args.db_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.args.db_name}"')
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("create_service", "event-mesh", "default", "bench", "-c", json.dumps({"namespace": NAMESPACE}))
        self.key = json.loads(self.manage("create_service_key", "bench", "k"))
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                f"CREATE TABLE {RAW_TABLE} (id bigserial PRIMARY KEY, queue_id bigint NOT NULL, "
                "payload bytea NOT NULL, created_at timestamptz NOT NULL)"
            )

    def drop_database(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.args.db_name}" WITH (FORCE)')

    def start(self, count: int) -> None:
        self.stop()
        self.ports = [self.args.port + index for index in range(count)]
        for port in self.ports:
            command = [str(BIN / "daphne"), "-b", HOST, "-p", str(port)]
            if not self.args.access_log:
                command += ["-v", "0"]
            command.append("meshsite.asgi:application")
            with open(self.var_dir / f"daphne-{port}.log", "ab") as log:
                self.processes.append(subprocess.Popen(
                    command, cwd=ROOT, env=self.env(port, server=True), stdout=log, stderr=subprocess.STDOUT,
                ))
        for port, process in zip(self.ports, self.processes, strict=True):
            self._wait_ready(port, process)

    def _wait_ready(self, port: int, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = (self.var_dir / f"daphne-{port}.log").read_text(errors="replace")
                raise SystemExit(f"daphne on port {port} exited:\n{log[-3000:]}")
            try:
                httpx.get(f"http://{HOST}:{port}{MANAGEMENT}/readinessCheck", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit(f"daphne on port {port} did not answer within 60 s")

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []

    def token(self) -> str:
        oa2 = next(entry for entry in self.key["messaging"] if "httprest" in entry["protocol"])["oa2"]
        response = httpx.post(
            f"http://{HOST}:{self.ports[0]}/oauth/token", data={"grant_type": "client_credentials"},
            auth=(oa2["clientid"], oa2["clientsecret"]), timeout=30,
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def create_queue(self, token: str) -> None:
        response = httpx.put(
            f"http://{HOST}:{self.ports[0]}{MANAGEMENT}/queues/{enc(QUEUE)}",
            headers={"Authorization": f"Bearer {token}"}, timeout=30,
        )
        if response.status_code not in (200, 201):
            raise SystemExit(f"creating the queue answered {response.status_code}: {response.text}")

    def reset_messages(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE messaging_message")
            conn.execute("VACUUM ANALYZE messaging_message")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.var_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Profiling (optional, --profile): py-spy samples one Daphne process (wall clock, idle
# included) during a publish run that is not part of the reported numbers. Each sample of
# the thread running Django's sync code is given to the innermost phase it is in, so the
# phases add up to the time a request spends there; samples of the event-loop thread are
# sorted the same way.

SYNC_PHASES = [
    # (label, regex matched against one "function (file:line)" frame), innermost wins
    ("new PostgreSQL connection (connect)", r"^BaseDatabaseWrapper\.connect "),
    ("connection health check (SELECT 1)", r"\.is_usable "),
    ("COMMIT", r"^Atomic\.__exit__ "),
    ("INSERT message (Model.save)", r"^Model\.save "),
    ("queue lookup (queue_get)", r"^queue_get "),
    ("token lookup (client_for_token)", r"^client_for_token "),
    ("rules, validation, row building", r"^message_publish_to_queue "),
    ("view: header parsing, response", r"^QueuePublishView\.post "),
    ("DRF: Request, perms, finalize", r"^APIView\.dispatch "),
    ("request_started/finished signals", r"^Signal\.send "),
    ("Django sync middleware + handler", r"django/(core/handlers|middleware|contrib)|meshsite/middleware"),
]
WAIT_LEAF = re.compile(r"^(Connection\.wait|wait_conn|wait|wait_c) \(psycopg/")
MAIN_PHASES = [
    ("idle (waiting in epoll)", r"^EpollSelector\.select "),
    ("starting a thread per request", r"^Thread\.start "),
    ("Django ASGI handler + async middleware", r"^(ASGIHandler|MiddlewareMixin\.__acall__|AsyncToSync\.main_wrap|"
                                               r"SyncToAsync\.__call__|BodyLimitMiddleware)"),
]


def _phase(frames: list[str], phases: list[tuple[str, str]], default: str) -> str:
    for frame in reversed(frames):
        for label, pattern in phases:
            if re.search(pattern, frame):
                return label
    return default


def analyze_profile(raw_path: Path, rate: int, requests: int) -> dict[str, Any]:
    """Attribute py-spy `--format raw --threads --idle` samples to the phases of a request."""
    sync: collections.Counter[str] = collections.Counter()
    sync_wait: collections.Counter[str] = collections.Counter()
    main: collections.Counter[str] = collections.Counter()
    other = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:]
        if any(frame.startswith("SyncToAsync.thread_handler ") for frame in frames):
            if frames[-1].startswith(("Condition.wait ", "Event.wait ")) and any(
                    frame.startswith("CurrentThreadExecutor.run_until_future ") for frame in frames[-4:]):
                label = "waiting for the event loop (async_to_sync hop)"
            else:
                label = _phase(frames, SYNC_PHASES, "asgiref sync_to_async glue")
            sync[label] += count
            if WAIT_LEAF.search(frames[-1]):
                sync_wait[label] += count
        elif thread.endswith("MainThread"):
            main[_phase(frames, MAIN_PHASES, "Twisted/Daphne HTTP + asyncio")] += count
        else:
            other += count

    def per_request(samples: int) -> float:
        return round(samples / rate / max(1, requests) * 1e6, 1)

    order = [label for label, _ in SYNC_PHASES] + ["asgiref sync_to_async glue",
                                                   "waiting for the event loop (async_to_sync hop)"]
    return {
        "requests": requests,
        "sync_thread_us_per_request": {
            label: {"total": per_request(sync[label]), "waiting_on_postgres": per_request(sync_wait[label])}
            for label in order if sync[label]
        },
        "sync_thread_total_us_per_request": per_request(sum(sync.values())),
        "event_loop_thread_us_per_request": {label: per_request(count) for label, count in main.most_common()},
        "other_threads_samples": other,
    }


def find_py_spy() -> str | None:
    py_spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if not py_spy:
        print("--profile: py-spy not found (pip install py-spy into the venv); skipped")
    return py_spy


def start_py_spy(py_spy: str, pid: int, rate: int, raw_path: Path, svg_path: Path,
                 seconds: float | None = None) -> list[subprocess.Popen]:
    """Two py-spy samplers of `pid` (all threads, idle ones too): raw samples and a flame graph."""
    duration = ["--duration", str(seconds)] if seconds else []
    return [
        subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), *duration, "--rate", str(rate), "--idle", "--threads",
             "--nonblocking", "--format", fmt, "--output", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for fmt, path in (("raw", raw_path), ("flamegraph", svg_path))
    ]


def save_results(output: dict[str, Any], name: str, stamp: str, print_breakdown: Any, print_profile: Any) -> int:
    """Write a run's JSON to bench/results and print its breakdown and profile, if any."""
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(json.dumps(output, indent=2))
    if output.get("breakdown"):
        print_breakdown(output["breakdown"])
    if output.get("profile"):
        print_profile(output["profile"])
    print(f"\nresults: {path.relative_to(ROOT)}")
    return 0


async def profile_publish(args: argparse.Namespace, mesh: Mesh, client: Client, stamp: str,
                          stop: threading.Event) -> dict[str, Any]:
    py_spy = find_py_spy()
    if not py_spy:
        return {}
    mesh.start(1)
    raw_path = RESULTS / f"profile-publish-{stamp}.txt"
    svg_path = RESULTS / f"profile-publish-{stamp}.svg"
    seconds, rate = max(3, int(args.duration)), 250
    # One warm-up second outside the sampling, then py-spy runs inside the measured window.
    spies: list[subprocess.Popen] = []

    async def start_spies() -> None:
        await asyncio.sleep(1.0)
        spies.extend(start_py_spy(py_spy, mesh.pids[0], rate, raw_path, svg_path, seconds))

    spy_task = asyncio.create_task(start_spies())
    result = await http_phase("publish (profiled)", "publish", client, mesh.ports, args.profile_concurrency, 1.0,
                              seconds + 0.5, mesh, stop)
    await spy_task
    for spy in spies:
        _, err = await asyncio.to_thread(spy.communicate, timeout=60)
        if spy.returncode != 0:
            print(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
            return {}
    analysis = analyze_profile(raw_path, rate, round(result.ops_per_s * seconds))
    analysis["concurrency"] = args.profile_concurrency
    # What share of a request's time the samples account for (c=1: a request's time is 1/rate).
    # py-spy discovers threads periodically, so samples of short-lived per-request threads are
    # partly missed; low coverage means the phase split below is skewed.
    if args.profile_concurrency == 1 and result.ops_per_s:
        analysis["sync_thread_coverage_pct"] = round(
            100 * analysis["sync_thread_total_us_per_request"] * result.ops_per_s / 1e6, 1)
    analysis["run"] = asdict(result)
    analysis["files"] = {"raw": str(raw_path.relative_to(ROOT)), "flamegraph": str(svg_path.relative_to(ROOT))}
    return analysis


# --------------------------------------------------------------------------------------
# Breakdown (optional, --breakdown): deterministic timings of the parts of a publish, in a
# Django process of its own (same settings and environment as the servers), no HTTP server:
# each part is called N times and its wall and CPU time per call measured (CPU of all the
# process's threads). Sampling profilers undercount here: Django under ASGI runs each
# request's sync code in a new short-lived thread, which a sampler partly misses.

BREAKDOWN_CODE = r"""
import asyncio, json, os, time
from urllib.parse import quote
from meshsite.asgi import application  # sets Django up
from django.db import connection, transaction
from django.db.backends.signals import connection_created
from django.test import Client
from django.utils import timezone
from meshsite.platform.auth import client_for_token
from messaging.models import Message
from messaging.selectors import queue_get
from messaging.services.messages import Outgoing, message_publish_to_queue

token, name, count = os.environ["BENCH_TOKEN"], os.environ["BENCH_QUEUE"], int(os.environ["BENCH_N"])
payload = os.urandom(int(os.environ["BENCH_PAYLOAD"]))
path = "/messagingrest/v1/queues/" + quote(name, safe="") + "/messages"
opened = [0]
connection_created.connect(lambda **kw: opened.__setitem__(0, opened[0] + 1), weak=False)
results = {}

def record(label, started, cpu, before):
    results[label] = {"wall_us": round((time.perf_counter() - started) / count * 1e6, 1),
                      "cpu_us": round((time.process_time() - cpu) / count * 1e6, 1),
                      "connection_opens_per_call": round((opened[0] - before) / count, 2)}

def measure(label, fn):
    for _ in range(min(20, count)):
        fn()
    before, started, cpu = opened[0], time.perf_counter(), time.process_time()
    for _ in range(count):
        fn()
    record(label, started, cpu, before)

instance = client_for_token(token).instance
queue = queue_get(instance=instance, name=name)
outgoing = Outgoing(payload=payload, content_type="application/octet-stream", qos=1)

def insert_commit():
    now = timezone.now()
    with transaction.atomic():
        Message(queue=queue, payload=payload, size=len(payload), content_type=outgoing.content_type,
                address="queue:" + name, qos=1, created_at=now, expires_at=now).save(force_insert=True)

def raw_insert():
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_raw_insert (queue_id, payload, created_at) VALUES (1, %s, now())", [payload])

def select_1():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")

measure("SELECT 1 (Django cursor, autocommit)", select_1)
measure("raw INSERT (Django cursor, autocommit)", raw_insert)
measure("token lookup (client_for_token)", lambda: client_for_token(token))
measure("queue lookup (queue_get)", lambda: queue_get(instance=instance, name=name))
measure("INSERT + COMMIT (Message.save in atomic)", insert_commit)
measure("service: message_publish_to_queue", lambda: message_publish_to_queue(
    instance=instance, queue_name=name, outgoing=outgoing))

client = Client()
headers = {"Authorization": "Bearer " + token, "x-qos": "1"}
def sync_request():
    response = client.post(path, data=payload, content_type="application/octet-stream", headers=headers,
                           REQUEST_URI=path)
    assert response.status_code == 204, response.status_code
measure("request: Django sync handler (test Client)", sync_request)
connection.close()

scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
         "path": "/messagingrest/v1/queues/" + name + "/messages", "raw_path": path.encode(), "query_string": b"",
         "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
         "headers": [(b"host", b"127.0.0.1"), (b"authorization", ("Bearer " + token).encode()), (b"x-qos", b"1"),
                     (b"content-type", b"application/octet-stream"), (b"content-length", str(len(payload)).encode())]}

async def asgi_request():
    sent, calls = [], [0]
    async def receive():
        calls[0] += 1
        if calls[0] == 1:
            return {"type": "http.request", "body": payload, "more_body": False}
        await asyncio.Future()  # no disconnect while the request runs
    async def send(message):
        sent.append(message)
    await application(dict(scope), receive, send)
    assert sent[0]["status"] == 204, sent[0]

async def asgi_requests():
    for _ in range(min(20, count)):
        await asgi_request()
    before, started, cpu = opened[0], time.perf_counter(), time.process_time()
    for _ in range(count):
        await asgi_request()
    record("request: Django ASGI handler (meshsite.asgi, no server)", started, cpu, before)

asyncio.run(asgi_requests())
print(json.dumps(results))
"""


def breakdown(args: argparse.Namespace, mesh: Mesh, token: str) -> dict[str, Any]:
    env = mesh.env(server=True)
    env.update(BENCH_TOKEN=token, BENCH_QUEUE=QUEUE, BENCH_N=str(args.breakdown_n), BENCH_PAYLOAD=str(args.payload))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", BREAKDOWN_CODE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        print(f"--breakdown failed:\n{done.stderr[-3000:]}")
        return {}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def print_breakdown(parts: dict[str, Any]) -> None:
    print("\nbreakdown of a publish (no HTTP server; per call):")
    print(f"  {'part':<58} {'wall µs':>8} {'cpu µs':>8} {'conn opens':>10}")
    for label, value in parts.items():
        opens = value["connection_opens_per_call"]
        print(f"  {label:<58} {value['wall_us']:>8.0f} {value['cpu_us']:>8.0f} {opens:>10}")


# --------------------------------------------------------------------------------------
# Machine facts and output


def machine_info(dsn: str) -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    with contextlib.suppress(OSError, IndexError):
        memory = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    with psycopg.connect(dsn, autocommit=True) as conn:
        pg_version = str((conn.execute("SELECT version()").fetchone() or ("?",))[0])
        pg_settings: dict[str, str] = dict(conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
            "('synchronous_commit', 'fsync', 'wal_sync_method', 'shared_buffers', 'commit_delay', 'max_connections')"
        ).fetchall())
    import daphne
    import django

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.rstrip() if done.returncode == 0 else "?"

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()
               if not line[3:].startswith("bench/") and line[3:] != "docs/performance.md"]
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes_outside_bench": changed,
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "daphne": daphne.__version__,
        "postgresql": pg_version,
        "postgresql_settings": pg_settings,
    }


def print_table(results: list[Result], raw: dict[int, float]) -> None:
    header = (f"{'scenario':<12} {'conc':>4} {'daphne':>6} {'ops/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'x raw':>5} "
              f"{'srv µs/op':>9} {'pg µs/op':>8} {'tx/op':>5} {'conn/op':>7} {'sess':>4} {'cpu%':>5} {'other%':>6} "
              f"{'err':>4}")
    print(header)
    print("-" * len(header))
    for r in results:
        n = r.notes
        ratio = f"{r.ops_per_s / raw[r.concurrency]:.2f}" if r.servers and raw.get(r.concurrency) else ""
        server = n.get("server_us_per_op") if r.servers else ""
        print(f"{r.scenario:<12} {r.concurrency:>4} {r.servers or '-':>6} {r.ops_per_s:>8.1f} {r.p50_ms:>7.2f} "
              f"{r.p99_ms:>7.2f} {ratio:>5} {server:>9} {n.get('postgres_us_per_op', ''):>8} "
              f"{n.get('db_transactions_per_op', ''):>5} {n.get('db_sessions_per_op', ''):>7} "
              f"{n.get('peak_db_sessions', ''):>4} "
              f"{n.get('machine_busy_pct', ''):>5} {n.get('other_processes_pct', ''):>6} {r.errors:>4}")
    print("srv/pg µs/op: CPU of the Daphne processes / of all PostgreSQL processes per op; tx/op, conn/op: "
          "transactions and new\nsessions in the scratch database per op; sess: peak open sessions on it; "
          "cpu%: machine busy; other%: CPU of other\nprocesses (disturbance)")


def print_profile(profile: dict[str, Any]) -> None:
    print(f"\nprofile: one Daphne, publish c={profile['concurrency']}, {profile['run']['ops_per_s']} ops/s under "
          f"py-spy; wall µs per request in the thread running Django's sync code (innermost phase wins):")
    for label, value in profile["sync_thread_us_per_request"].items():
        print(f"  {label:<50} {value['total']:>8.1f}   of which waiting on PostgreSQL "
              f"{value['waiting_on_postgres']:>7.1f}")
    print(f"  {'total':<50} {profile['sync_thread_total_us_per_request']:>8.1f}"
          + (f"   (samples cover {profile['sync_thread_coverage_pct']}% of the request time: py-spy misses "
             "parts of short-lived threads)" if "sync_thread_coverage_pct" in profile else ""))
    print("event-loop thread, µs per request:")
    for label, value in profile["event_loop_thread_us_per_request"].items():
        print(f"  {label:<50} {value:>8.1f}")
    print(f"files: {profile['files']['flamegraph']}, {profile['files']['raw']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each (default 1)")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8],
                        help="comma-separated client counts (default 1,8)")
    parser.add_argument("--servers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                        help="comma-separated Daphne process counts to try, one port each (default 1,2)")
    parser.add_argument("--payload", type=int, default=1024, help="message size in bytes (default 1024)")
    parser.add_argument("--port", type=int, default=8710, help="first Daphne port (default 8710)")
    parser.add_argument("--access-log", action="store_true",
                        help="keep Daphne's default per-request access log (default: daphne -v 0)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one Daphne under publish with py-spy (needs py-spy in the venv)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the parts of a publish in-process (token lookup, queue lookup, insert, "
                             "Django sync vs ASGI handler)")
    parser.add_argument("--breakdown-n", type=int, default=300, help="calls per part for --breakdown (default 300)")
    parser.add_argument("--profile-concurrency", type=int, default=1, help="clients while profiling (default 1)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the Daphne processes (what-if runs), repeatable")
    parser.add_argument("--db-url-query", default="",
                        help="query string appended to the servers' DATABASE_URL, e.g. 'pool=true' (what-if runs)")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--db-name", default="meshsite_bench", help="scratch database, dropped and recreated")
    parser.add_argument("--keep-db", action="store_true", help="leave the scratch database at the end")
    args = parser.parse_args()
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", args.db_name):
        parser.error("--db-name must be a plain lower-case identifier")
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes NAME=VALUE")

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started with SIGINT ignored (background job)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    payload = os.urandom(args.payload)
    mesh = Mesh(args)
    results: list[Result] = []
    output: dict[str, Any] = {}
    try:
        print("setting up: database, migrate, instance, key ...", flush=True)
        mesh.create_database()
        output["machine"] = machine_info(mesh.dsn)
        m = output["machine"]
        print(f"machine: {m['nproc']} cpus, {m['cpu_model']}, {m['memory']}; {m['postgresql'].split(',')[0]}; "
              f"synchronous_commit={m['postgresql_settings'].get('synchronous_commit')}; code at {m['commit']}"
              + (f" + uncommitted changes in {', '.join(m['uncommitted_changes_outside_bench'])}"
                 if m["uncommitted_changes_outside_bench"] else ""), flush=True)
        output["config"] = dict(vars(args))
        output["machine"]["loadavg_at_start"] = os.getloadavg()

        raw: dict[int, list[Result]] = collections.defaultdict(list)

        def run_raw(label: str) -> None:
            for concurrency in args.concurrency:
                result = raw_insert(mesh.dsn, concurrency, args.warmup, args.duration, payload, stop)
                result.notes["when"] = label
                raw[concurrency].append(result)
                results.append(result)
                print(f"  raw insert     c={concurrency}: {result.ops_per_s:8.1f} ops/s  ({label})", flush=True)

        run_raw("before")
        token = ""
        for servers in args.servers:
            mesh.start(servers)
            if not token:
                token = mesh.token()
                mesh.create_queue(token)
            client = Client(token, payload)
            mesh.reset_messages()
            for concurrency in args.concurrency:
                for scenario, op in (("publish", "publish"), ("consume+ack", "consume_ack")):
                    result = asyncio.run(http_phase(scenario, op, client, mesh.ports, concurrency, args.warmup,
                                                    args.duration, mesh, stop))
                    results.append(result)
                    print(f"  {scenario:<13} c={concurrency} daphne={servers}: {result.ops_per_s:8.1f} ops/s  "
                          f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  errors {result.errors}"
                          + (f"  {result.notes['failures']}" if "failures" in result.notes else ""), flush=True)
            mesh.stop()
        run_raw("after")

        if args.breakdown and not stop.is_set():
            print("timing the parts of a publish in-process ...", flush=True)
            mesh.reset_messages()
            output["breakdown"] = breakdown(args, mesh, token)

        if args.profile and not stop.is_set():
            print("profiling publish under py-spy (not part of the numbers above) ...", flush=True)
            mesh.reset_messages()
            output["profile"] = asyncio.run(profile_publish(args, mesh, Client(token, payload), stamp, stop))
            mesh.stop()
    except KeyboardInterrupt:
        stop.set()
        print("\ninterrupted; stopping", flush=True)
    finally:
        mesh.close()
        if not args.keep_db:
            try:
                mesh.drop_database()
            except psycopg.Error as error:
                print(f"could not drop {args.db_name}: {error}")

    if not results:
        return 1
    # The ratio is taken against the better of the two raw runs at that concurrency (conservative).
    raw_best = {c: max(r.ops_per_s for r in runs) for c, runs in raw.items()}
    print()
    print_table(results, raw_best)
    disturbed = [r for r in results if r.notes.get("other_processes_pct", 0) > 10]
    if disturbed:
        worst = max(r.notes["other_processes_pct"] for r in disturbed)
        print(f"WARNING: other processes used up to {worst}% of the machine's CPU during {len(disturbed)} of "
              f"{len(results)} measurements; those numbers are disturbed")
    summary = []
    for concurrency in args.concurrency:
        publishes = [r for r in results if r.scenario == "publish" and r.concurrency == concurrency]
        if publishes and raw_best.get(concurrency):
            best = max(publishes, key=lambda r: r.ops_per_s)
            ratio = best.ops_per_s / raw_best[concurrency]
            summary.append({"concurrency": concurrency, "best_publish_ops_per_s": best.ops_per_s,
                            "daphne_processes": best.servers, "raw_insert_ops_per_s": raw_best[concurrency],
                            "ratio": round(ratio, 3), "goal": 0.5, "goal_met": ratio >= 0.5})
            print(f"publish/raw-insert at c={concurrency}: {best.ops_per_s:.0f} / {raw_best[concurrency]:.0f} = "
                  f"{ratio:.2f}x (best of daphne={best.servers}; goal >= 0.5x: {'met' if ratio >= 0.5 else 'NOT met'})")
    output["results"] = [asdict(r) for r in results]
    output["summary"] = summary
    return save_results(output, "rest_throughput", stamp, print_breakdown, print_profile)


if __name__ == "__main__":
    sys.exit(main())
