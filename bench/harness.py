"""The benchmarks' shared harness: a scratch PostgreSQL database (created, migrated, dropped),
the instance, key and token made through the real CLI and /oauth/token, the servers under
test (Daphne or uvicorn, one process per port), keep-alive HTTP clients with latency
percentiles, the raw PostgreSQL insert baseline, CPU readers, py-spy helpers, machine facts
and the results file in bench/results/ (git-ignored).

Each benchmark is a script on top of it (rest_throughput.py, webhook_throughput.py).
Not a test: nothing here asserts.
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
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
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


APP = "meshsite.asgi:application"
ZERO_APP = "bench.harness:zero_app"  # importable from ROOT, the servers' working directory


async def zero_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The least an ASGI app can do: what is left is the server's own cost per request."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@dataclass(frozen=True)
class TLSFiles:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files)."""

    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def self_signed(directory: Path) -> TLSFiles:
    """A fresh P-256 key and a certificate for IP 127.0.0.1, valid for a day: what TLS costs
    the server and the client is measured with the handshake done once per keep-alive
    connection, as with a real client."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TLSFiles(cert=directory / "bench-cert.pem", key=directory / "bench-key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


# The server commands under test, by name (--server). Each gets the port and keeps its
# access log off unless asked: a log line per request costs the server measurable CPU.
# With `tls`, the server itself terminates TLS (uvicorn --ssl-*, a Twisted ssl: endpoint).
def server_command(server: str, port: int, access_log: bool = False, tls: TLSFiles | None = None,
                   app: str = APP) -> list[str]:
    if server == "daphne":
        if tls is None:
            command = [str(BIN / "daphne"), "-b", HOST, "-p", str(port)]
        else:
            command = [str(BIN / "daphne"), "-e",
                       f"ssl:{port}:interface={HOST}:privateKey={tls.key}:certKey={tls.cert}"]
        return command + ([] if access_log else ["-v", "0"]) + [app]
    if server == "uvicorn":
        command = [str(BIN / "uvicorn"), app, "--host", HOST, "--port", str(port)]
        if tls is not None:
            command += ["--ssl-keyfile", str(tls.key), "--ssl-certfile", str(tls.cert)]
        return command + ([] if access_log else ["--no-access-log"])
    raise SystemExit(f"unknown server {server!r} (daphne or uvicorn)")


SERVERS = ("daphne", "uvicorn")


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


def processes_cpu(command: str) -> dict[int, float]:
    """CPU seconds of every process whose command name is `command` (postgres, redis-server)."""
    cpu = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as handle:
                    if handle.read().strip() == command:
                        cpu[int(entry)] = _proc_cpu(entry)
            except OSError:
                pass
    return cpu


def _postgres_cpu() -> dict[int, float]:
    return processes_cpu("postgres")


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
    def __init__(self, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.tls = tls
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port, ssl=self.tls)
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
    def __init__(self, token: str, payload: bytes, queue: str = QUEUE) -> None:
        self.auth = {"Authorization": f"Bearer {token}"}
        base = f"{REST}/queues/{enc(queue)}/messages"
        self.ack_prefix = f"{base}/"
        self.publish_raw = build_request(
            "POST", base, {**self.auth, "x-qos": "1", "Content-Type": "application/octet-stream"}, payload
        )
        self.consume_raw = build_request("POST", f"{base}/consumption", {**self.auth, "x-qos": "1"})

    async def publish(self, conn: Connection) -> str | None:
        status, _, body = await conn.request(self.publish_raw)
        return None if status == 204 else f"publish {status} {body[:200]!r}"

    async def zero(self, conn: Connection) -> str | None:
        # Against the zero-work app: any request, answered 200 without work.
        status, _, body = await conn.request(self.consume_raw)
        return None if status == 200 else f"zero {status} {body[:200]!r}"

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
    tls = mesh.tls.client_context() if mesh.tls else None
    connections = [Connection(ports[slot % len(ports)], tls) for slot in range(concurrency)]
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
    """A scratch database, the CLI-created instance and key, and N server processes
    (`server`: daphne, the default, or uvicorn; with `tls`, speaking HTTPS)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.admin_dsn = f"postgresql://{args.pg_user}@{args.pg_host}:{args.pg_port}/postgres"
        self.dsn = f"postgresql://{args.pg_user}@{args.pg_host}:{args.pg_port}/{args.db_name}"
        self.var_dir = Path(tempfile.mkdtemp(prefix="meshsite-bench-"))
        self.processes: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self.key: dict[str, Any] = {}
        self.server: str = getattr(args, "server", "daphne")
        self.tls: TLSFiles | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def verify(self) -> str | bool:
        return str(self.tls.cert) if self.tls else True

    def env(self, port: int | None = None, server: bool = False) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
        url = self.dsn.replace("postgresql://", "postgres://", 1)
        if server and self.args.db_url_query:
            url += "?" + self.args.db_url_query
        env.update(
            DATABASE_URL=url,
            MESH_VAR_DIR=str(self.var_dir),
            MESH_PUBLIC_URL=f"{self.scheme}://{HOST}:{port or self.args.port}",
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

    def start(self, count: int, app: str = APP) -> None:
        self.stop()
        self.ports = [self.args.port + index for index in range(count)]
        for port in self.ports:
            command = server_command(self.server, port, getattr(self.args, "access_log", False), self.tls, app)
            with open(self.var_dir / f"{self.server}-{port}.log", "ab") as log:
                self.processes.append(subprocess.Popen(
                    command, cwd=ROOT, env=self.env(port, server=True), stdout=log, stderr=subprocess.STDOUT,
                ))
        for port, process in zip(self.ports, self.processes, strict=True):
            self._wait_ready(port, process)

    def _wait_ready(self, port: int, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = (self.var_dir / f"{self.server}-{port}.log").read_text(errors="replace")
                raise SystemExit(f"{self.server} on port {port} exited:\n{log[-3000:]}")
            try:
                httpx.get(f"{self.scheme}://{HOST}:{port}{MANAGEMENT}/readinessCheck", timeout=2,
                          verify=self.verify)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit(f"{self.server} on port {port} did not answer within 60 s")

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
            f"{self.scheme}://{HOST}:{self.ports[0]}/oauth/token", data={"grant_type": "client_credentials"},
            auth=(oa2["clientid"], oa2["clientsecret"]), timeout=30, verify=self.verify,
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def create_queue(self, token: str, name: str = QUEUE) -> None:
        response = httpx.put(
            f"{self.scheme}://{HOST}:{self.ports[0]}{MANAGEMENT}/queues/{enc(name)}",
            headers={"Authorization": f"Bearer {token}"}, timeout=30, verify=self.verify,
        )
        if response.status_code not in (200, 201):
            raise SystemExit(f"creating the queue answered {response.status_code}: {response.text}")

    def reset_messages(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE messaging_message")
            conn.execute("VACUUM ANALYZE messaging_message")

    def django(self, code: str, extra_env: dict[str, str] | None = None, timeout: float = 600) -> str:
        """Run `code` in a Django process with the servers' settings and environment; its stdout."""
        env = {**self.env(server=True), **(extra_env or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        env.setdefault("DJANGO_SETTINGS_MODULE", "meshsite.settings")
        done = subprocess.run([sys.executable, "-c", "import django; django.setup()\n" + code], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise SystemExit(f"Django code failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.var_dir, ignore_errors=True)


def _phase(frames: list[str], phases: list[tuple[str, str]], default: str) -> str:
    for frame in reversed(frames):
        for label, pattern in phases:
            if re.search(pattern, frame):
                return label
    return default


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
    RESULTS.mkdir(parents=True, exist_ok=True)  # git-ignored: absent on a fresh clone
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(json.dumps(output, indent=2))
    if output.get("breakdown"):
        print_breakdown(output["breakdown"])
    if output.get("profile"):
        print_profile(output["profile"])
    print(f"\nresults: {path.relative_to(ROOT)}")
    return 0


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


def stop_on_signals() -> threading.Event:
    """An event set on SIGTERM or SIGINT (which then interrupt the main thread), so a
    benchmark stopped midway still drops its scratch database and servers."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started with SIGINT ignored (background job)
    return stop


# ======================================================================================
# Helpers for benchmarks with processes beside the server (added for webhook_throughput.py;
# a separate block, nothing above depends on it): a recording HTTP receiver, side
# processes (a Celery worker, beat), CPU per role, open-loop publishing, py-spy phase
# summaries and result lines.

SEQ_DIGITS = 12  # a benchmark payload starts with its sequence number: arrivals map to publishes


def ms(values: list[float], fraction: float) -> float:
    """The percentile of seconds `values`, in milliseconds (NaN for none)."""
    return round(percentile(sorted(values), fraction) * 1e3, 2) if values else float("nan")


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def serve_receiver(port: int) -> None:
    """A webhook receiver in its own process (asyncio HTTP/1.1, keep-alive): answers 200 with
    no body and records (arrival, path, x-message-id, sequence) of each POST under /hook;
    GET /stats, /dump and /reset read and clear the record. Stops with its parent."""
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
        async with await asyncio.start_server(handle, HOST, port, backlog=1024):
            while os.getppid() == parent:
                await asyncio.sleep(0.5)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(main())


class SideProcesses:
    """Processes a benchmark starts beside the servers (receiver, Celery worker, beat), each
    logging to var_dir/ROLE.log; `close()` stops them all."""

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        self.running: dict[str, subprocess.Popen] = {}

    def spawn(self, role: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        with open(self.var_dir / f"{role}.log", "ab") as log:
            self.running[role] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self.running[role]

    def log_tail(self, role: str) -> str:
        path = self.var_dir / f"{role}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def wait(self, role: str, ready: Any, seconds: float) -> None:
        """Until `ready()` is true; exits with the role's log if it dies or takes too long."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.running[role].poll() is not None:
                raise SystemExit(f"the {role} exited:\n{self.log_tail(role)}")
            with contextlib.suppress(httpx.HTTPError, OSError):
                if ready():
                    return
            time.sleep(0.1)
        raise SystemExit(f"the {role} was not ready within {seconds:g} s:\n{self.log_tail(role)}")

    def pids(self) -> dict[str, list[int]]:
        return {role: [process.pid] for role, process in self.running.items()}

    def close(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


class Receiver:
    """`serve_receiver` started as a side process, and its control calls."""

    def __init__(self, side: SideProcesses, port: int) -> None:
        self.port = port
        self.http = httpx.Client(base_url=f"http://{HOST}:{port}", timeout=30)
        code = f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import harness; " \
               f"harness.serve_receiver({port})"
        side.spawn("receiver", [sys.executable, "-c", code], env={**os.environ, "PYTHONUNBUFFERED": "1"})
        side.wait("receiver", lambda: self.http.get("/stats"), 20)

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def reset(self) -> None:
        self.http.get("/reset")

    def count(self) -> int:
        return int(self.http.get("/stats").json()["count"])

    def arrivals(self) -> list[list[Any]]:
        """[arrival (monotonic s), path, x-message-id, sequence] of each recorded POST."""
        return list(self.http.get("/dump").json())

    def close(self) -> None:
        self.http.close()


def start_celery_worker(side: SideProcesses, env: dict[str, str], redis_url: str, concurrency: int,
                        beat: bool) -> None:
    """One worker process (threads pool), empty broker queues first; and beat if asked."""
    from celery import Celery
    from redis import Redis

    Redis.from_url(redis_url).delete("celery", "unacked", "unacked_index")  # a last run's tasks
    name = f"bench-{os.getpid()}@{socket.gethostname()}"
    celery = [str(BIN / "celery"), "-A", "meshsite"]
    side.spawn("worker", [*celery, "worker", "--pool=threads", f"--concurrency={concurrency}",
                          "--loglevel=WARNING", "-n", name, "--without-gossip", "--without-mingle"], env)
    app = Celery(broker=redis_url)
    try:
        side.wait("worker", lambda: app.control.ping(destination=[name], timeout=1.0), 60)
    finally:
        app.close()
    if beat:
        side.spawn("beat", [*celery, "beat", "--loglevel=WARNING", "--schedule", str(side.var_dir / "beat")], env)


@dataclass
class RoleSnapshot:
    base: Snapshot
    roles: dict[str, dict[int, float]]


def take_roles(roles: dict[str, list[int]], dsn: str) -> RoleSnapshot:
    """CPU seconds of each role's processes (and Redis), beside the harness's snapshot."""
    cpu = {role: {pid: _proc_cpu(pid) for pid in pids} for role, pids in roles.items()}
    cpu["redis"] = processes_cpu("redis-server")
    return RoleSnapshot(snapshot([], dsn), cpu)


def cpu_per_op(before: RoleSnapshot, after: RoleSnapshot, ops: int) -> dict[str, Any]:
    """µs of CPU per operation for each role and PostgreSQL, and how busy the machine was
    with anything else (`other_processes_pct`: above a few percent, numbers are disturbed)."""
    def per_op(seconds: float) -> float | None:
        return round(seconds * 1e6 / ops, 1) if ops else None

    roles = {role: _delta(pids, after.roles.get(role, {})) for role, pids in before.roles.items()}
    postgres = _delta(before.base.postgres, after.base.postgres)
    busy = after.base.machine_busy - before.base.machine_busy
    total = max(1e-9, after.base.machine_total - before.base.machine_total)
    transactions = after.base.db_transactions - before.base.db_transactions
    ours = sum(roles.values()) + postgres + after.base.client - before.base.client
    cores = len(os.sched_getaffinity(0))
    return {
        **{f"{role}_us_per_op": per_op(cpu) for role, cpu in roles.items()},
        "postgres_us_per_op": per_op(postgres),
        **{f"{role}_cpu_pct": round(100 * cpu * cores / total, 1) for role, cpu in roles.items()},
        "machine_busy_pct": round(100 * busy / total, 1),
        "other_processes_pct": round(100 * max(0.0, busy - ours) / total, 1),
        "db_transactions_per_op": round(transactions / ops, 3) if ops else None,
    }


Sent = dict[int, tuple[float, float, bool]]  # request number -> (sent, answered, in the measured window)


async def open_loop_post(port: int, path: str, headers: dict[str, str], rate: int, warmup: float, duration: float,
                         body: Any, stop: threading.Event, on_measure: Any = None,
                         max_connections: int = 32) -> tuple[Sent, collections.Counter[str]]:
    """Open loop: request i is sent at start + i/rate whatever happened to the others, over
    up to `max_connections` keep-alive connections; `body(i)` makes its body. `on_measure()`
    is called (in a thread) when the measured window starts and when sending ends.
    Returns i -> (sent, answered 2xx, in the measured window) and the errors by kind."""
    loop = asyncio.get_running_loop()
    idle = [Connection(port) for _ in range(4)]
    opened, free = len(idle), asyncio.Condition()
    record: Sent = {}
    errors: collections.Counter[str] = collections.Counter()
    start = loop.time() + 0.2
    measure_from, total = start + warmup, int(rate * (warmup + duration))
    tasks: set[asyncio.Task] = set()

    async def one(number: int, due: float, conn: Connection) -> None:
        sent = loop.time()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                status, _, answer = await conn.request(build_request("POST", path, headers, body(number)))
            if 200 <= status < 300:
                record[number] = (sent, loop.time(), due >= measure_from)
            else:
                errors[f"{status} {answer[:100]!r}"] += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
            errors[type(error).__name__] += 1
            conn.close()
        async with free:
            idle.append(conn)
            free.notify()

    measuring = False
    for i in range(total):
        due = start + i / rate
        if stop.is_set():
            break
        if not measuring and due >= measure_from:
            measuring = True
            if on_measure:
                await asyncio.to_thread(on_measure)
        await asyncio.sleep(max(0.0, due - loop.time()))
        async with free:
            if not idle and opened < max_connections:
                idle.append(Connection(port))
                opened += 1
            await free.wait_for(lambda: bool(idle))
            conn = idle.pop()
        task = asyncio.create_task(one(i, due, conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if on_measure:
        await asyncio.to_thread(on_measure)
    if tasks:
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT)
    for conn in idle:
        conn.close()
    return record, errors


def profile_phases(raw: Path, phases: list[tuple[str, str]], idle: re.Pattern[str], inside: str, rate: int,
                   ops: int) -> dict[str, Any]:
    """py-spy raw samples summed into wall µs per operation: by phase (the innermost frame
    matching one of `phases`, for stacks through a frame starting with `inside`) and by leaf
    frame. Stacks whose leaf matches `idle` are waiting threads, left out."""
    by_phase: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")[1:]
        if not frames or not count.isdigit() or idle.search(frames[-1]):
            continue
        within = any(frame.startswith(inside) for frame in frames)
        by_phase[_phase(frames, phases, "other") if within else "outside"] += int(count)
        leaves[frames[-1].split(" (")[0]] += int(count)
    per = 1e6 / rate / max(1, ops)
    return {"busy_us_per_op": {k: round(v * per, 1) for k, v in by_phase.most_common()},
            "top_leaves_us_per_op": {k: round(v * per, 1) for k, v in leaves.most_common(15)}}


def goal_line(name: str, value: float | None, met: bool, unit: str) -> None:
    if value is not None:
        print(f"goal {name}: {value:,.1f}{unit} -> {'met' if met else 'NOT met'}")


def warn_if_disturbed(values: list[float], limit: float = 10.0) -> None:
    if values and max(values) > limit:
        print(f"WARNING: other processes used up to {max(values)}% of the machine: the numbers are disturbed")
