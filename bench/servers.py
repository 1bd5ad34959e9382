"""uvicorn against Daphne on this machine: a zero-work ASGI app and a real publish, in one run.

    .venv/bin/python bench/servers.py [--seconds 5] [--rounds 3] [--clients 8]

Each server runs with the command line `make run` uses (meshrun.web_server_command). The
clients are keep-alive HTTP/1.1 connections driven by asyncio in two processes (one
process of Python clients saturates before uvicorn does). Rounds alternate the servers, so
that load from elsewhere on the machine hits both alike; the spread over rounds is printed,
because on a shared machine one number says little. With DATABASE_URL set, the publish runs
on a scratch PostgreSQL database (qos 1, 1 KiB), else on SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshsite.settings")

# After the path and settings: the live tests' server starter, shared rather than restated.
from bench.harness import APP, ZERO_APP  # noqa: E402
from tests.test_live_server import MANAGEMENT, REST, SERVERS, free_port, live_server, stop  # noqa: E402


async def _connection(port: int, request: bytes, until: float, statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while time.monotonic() < until:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if length:
            await reader.readexactly(length)
        status = int(head.split(b" ", 2)[1])
        statuses[status] = statuses.get(status, 0) + 1
    writer.close()


def _client_process(port: int, request: bytes, connections: int, seconds: float, out: multiprocessing.Queue) -> None:
    statuses: dict[int, int] = {}

    async def run() -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(*(_connection(port, request, until, statuses) for _ in range(connections)))

    asyncio.run(run())
    out.put(statuses)


def load(port: int, request: bytes, clients: int, seconds: float) -> tuple[float, dict[int, int]]:
    """Requests per second over `seconds`, with `clients` connections in two processes."""
    out: multiprocessing.Queue = multiprocessing.Queue()
    split = [clients // 2 + clients % 2, clients // 2]
    workers = [multiprocessing.Process(target=_client_process, args=(port, request, n, seconds, out))
               for n in split if n]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    totals: dict[int, int] = {}
    for _ in workers:
        for status, count in out.get().items():
            totals[status] = totals.get(status, 0) + count
    for worker in workers:
        worker.join()
    return sum(totals.values()) / (time.monotonic() - started), totals


def zero_work(server: str, clients: int, seconds: float) -> tuple[float, dict[int, int]]:
    from meshsite.platform.management.commands.meshrun import web_server_command

    port = free_port()
    command = [part if part != APP else ZERO_APP
               for part in web_server_command(server, "127.0.0.1", port)]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            # Access logs off under both: the number is the server's own work per request.
            extra = ["--no-access-log"] if server == "uvicorn" else ["-v", "0"]
            process = subprocess.Popen([*command[:1], *extra, *command[1:]], cwd=BASE_DIR, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for(port, process, log)
            load(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", clients, 1)  # warm-up
            return load(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", clients, seconds)
        finally:
            stop(process)


def _wait_for(port: int, process, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
            return
        except httpx.TransportError:
            if process.poll() is not None:
                raise SystemExit(log.read_text()) from None
            time.sleep(0.2)
    raise SystemExit(f"no answer on {port}:\n{log.read_text()}")


def publish_request(live, token: str) -> bytes:  # type: ignore[no-untyped-def]
    queue = "a%2Fb%2Fc%2Fbench"
    assert httpx.put(f"{live.base}{MANAGEMENT}/queues/{queue}", headers={"Authorization": f"Bearer {token}"},
                     timeout=10).status_code in (200, 201)
    body = b"x" * 1024
    return (f"POST {REST}/queues/{queue}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nx-qos: 1\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def publish(server: str, clients: int, seconds: float, rounds: int) -> list[tuple[float, dict[int, int]]]:
    with tempfile.TemporaryDirectory() as tmp, live_server(
            Path(tmp), {"MESH_MAX_MESSAGE_SIZE": "1048576"}, server=server) as live:
        oa2 = live.oa2
        token = httpx.post(oa2["tokenendpoint"], data={"grant_type": "client_credentials"},
                           auth=(oa2["clientid"], oa2["clientsecret"]), timeout=30).json()["access_token"]
        request = publish_request(live, token)
        port = int(live.base.rsplit(":", 1)[1])
        load(port, request, clients, 1)  # warm-up
        return [load(port, request, clients, seconds) for _ in range(rounds)]


def spread(rates: list[float]) -> str:
    return (f"median {statistics.median(rates):7.0f}/s  min {min(rates):7.0f}  max {max(rates):7.0f}  "
            f"({len(rates)} rounds)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} cores")
    zero: dict[str, list[float]] = {server: [] for server in SERVERS}
    for _ in range(args.rounds):
        for server in SERVERS:
            rate, statuses = zero_work(server, args.clients, args.seconds)
            assert set(statuses) == {200}, statuses
            zero[server].append(rate)
    real: dict[str, list[float]] = {}
    for server in SERVERS:
        results = publish(server, args.clients, args.seconds, args.rounds)
        for _, statuses in results:
            assert set(statuses) == {204}, statuses
        real[server] = [rate for rate, _ in results]
    print(f"load average after: {os.getloadavg()}")
    for name, table in (("zero-work app", zero), ("publish qos 1, 1 KiB", real)):
        for server, rates in table.items():
            print(f"{name:22} {server:8} {args.clients} clients: {spread(rates)}")
    print(json.dumps({"clients": args.clients, "seconds": args.seconds, "zero_work": zero, "publish": real,
                      "database": "postgresql" if os.environ.get("DATABASE_URL") else "sqlite"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
