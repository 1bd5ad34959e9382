#!/usr/bin/env python
"""Token endpoint: tokens/s with N clients, and publish latency while wrong secrets flood it.

Reuses rest_throughput.py's scratch database, server processes and keep-alive clients:

  tokens        POST /oauth/token (client_credentials, HTTP Basic, the real key) -> 200
  publish quiet one publisher (qos 1, 1 KiB) and nothing else
  publish flood the same publisher while F clients (another process) send the real client id
                with a wrong secret as fast as the server answers them (401, then 429)

The flood runs twice: with the default limits (the flooding address is refused 429 before
any work once it is past MESH_TOKEN_FAILURES_PER_ADDRESS), and with the address limit off, as
an attacker spread over many addresses would see it (every wrong secret then reaches the
database and the hasher). Not a test: nothing here asserts. Results: bench/results/.

    .venv/bin/python bench/token_throughput.py                       # uvicorn if installed
    .venv/bin/python bench/token_throughput.py --server daphne --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import importlib.util
import json
import multiprocessing
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rest_throughput import (  # noqa: E402
    BIN,
    HOST,
    RESULTS,
    ROOT,
    Client,
    Connection,
    Mesh,
    Result,
    build_request,
    http_phase,
    machine_info,
)

TOKEN_PATH = "/oauth/token"


class Tokens:
    """The http_phase operation: one token request on a keep-alive connection."""

    def __init__(self, client_id: str, secret: str) -> None:
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        body = b"grant_type=client_credentials"
        self.raw = build_request("POST", TOKEN_PATH, {
            "Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"}, body)

    async def token(self, conn: Connection) -> str | None:
        status, _, body = await conn.request(self.raw)
        return None if status == 200 else f"token {status} {body[:120]!r}"


class Server(Mesh):
    """Mesh, with uvicorn as an alternative to Daphne."""

    def start(self, count: int) -> None:
        if self.args.server == "daphne":
            return super().start(count)
        self.stop()
        self.ports = [self.args.port + index for index in range(count)]
        for port in self.ports:
            command = [str(BIN / "uvicorn"), "--host", HOST, "--port", str(port), "--no-access-log",
                       "--log-level", "warning", "meshsite.asgi:application"]
            with open(self.var_dir / f"daphne-{port}.log", "ab") as log:  # the name _wait_ready reads
                self.processes.append(subprocess.Popen(
                    command, cwd=ROOT, env=self.env(port, server=True), stdout=log, stderr=subprocess.STDOUT))
        for port, process in zip(self.ports, self.processes, strict=True):
            self._wait_ready(port, process)
        return None


def flood(port: int, raw: bytes, clients: int, seconds: float, out: Any) -> None:
    """F keep-alive clients sending `raw` for `seconds`; puts a Counter of statuses on `out`."""

    async def run() -> collections.Counter[str]:
        statuses: collections.Counter[str] = collections.Counter()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds

        async def one() -> None:
            conn = Connection(port)
            while loop.time() < deadline:
                try:
                    async with asyncio.timeout(30):
                        status, _, _ = await conn.request(raw)
                    statuses[str(status)] += 1
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
                    statuses[type(error).__name__] += 1
                    conn.close()
            conn.close()

        await asyncio.gather(*(one() for _ in range(clients)))
        return statuses

    out.put(dict(asyncio.run(run())))


async def publish_under_flood(args: argparse.Namespace, mesh: Server, client: Client, stop: threading.Event,
                              wrong: Tokens, label: str) -> tuple[Result, dict[str, int]]:
    queue: Any = multiprocessing.Queue()
    seconds = args.warmup + args.duration + 1
    process = multiprocessing.Process(target=flood, args=(mesh.ports[0], wrong.raw, args.flood, seconds, queue))
    process.start()
    await asyncio.sleep(0.5)  # the flood is running before the publisher's clock starts
    result = await http_phase(label, "publish", client, mesh.ports, args.publishers, args.warmup,
                              args.duration, mesh, stop)
    statuses = await asyncio.to_thread(queue.get, True, seconds + 30)
    process.join(10)
    result.notes["flood_statuses"] = statuses
    result.notes["flood_requests_per_s"] = round(sum(statuses.values()) / seconds, 1)
    return result, statuses


async def scenarios(args: argparse.Namespace, mesh: Server, stop: threading.Event) -> list[Result]:
    oa2 = next(entry for entry in mesh.key["messaging"] if "httprest" in entry["protocol"])["oa2"]
    right, wrong = Tokens(oa2["clientid"], oa2["clientsecret"]), Tokens(oa2["clientid"], "wrong-secret")
    results = []
    for env, tag in (([], "limits on"), (["MESH_TOKEN_FAILURES_PER_ADDRESS=0"], "address limit off")):
        mesh.args.server_env = env
        mesh.start(1)
        token = mesh.token()
        if not results:
            mesh.create_queue(token)
            results.append(await http_phase("tokens", "token", right, mesh.ports, args.clients, args.warmup,
                                            args.duration, mesh, stop))
        client = Client(token, b"x" * 1024)
        mesh.reset_messages()
        results.append(await http_phase(f"publish quiet ({tag})", "publish", client, mesh.ports, args.publishers,
                                        args.warmup, args.duration, mesh, stop))
        flooded, _ = await publish_under_flood(args, mesh, client, stop, wrong, f"publish flooded ({tag})")
        results.append(flooded)
    mesh.stop()
    return results


def print_table(results: list[Result]) -> None:
    print(f"{'scenario':34} {'clients':>7} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  flood")
    for r in results:
        flood_note = ""
        if "flood_statuses" in r.notes:
            flood_note = f"{r.notes['flood_requests_per_s']}/s {r.notes['flood_statuses']}"
        print(f"{r.scenario:34} {r.concurrency:>7} {r.ops_per_s:>9} {r.p50_ms:>8} {r.p99_ms:>8} {r.errors:>6}  "
              f"{flood_note}")
        print(f"{'':34} machine busy {r.notes.get('machine_busy_pct')}%, "
              f"other processes {r.notes.get('other_processes_pct')}%, "
              f"server {r.notes.get('server_us_per_op')} us/op")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_server = "uvicorn" if importlib.util.find_spec("uvicorn") else "daphne"
    parser.add_argument("--server", choices=["uvicorn", "daphne"], default=default_server)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=8, help="token clients (default 8)")
    parser.add_argument("--publishers", type=int, default=1, help="publishers, quiet and flooded (default 1)")
    parser.add_argument("--flood", type=int, default=32, help="wrong-secret clients (default 32)")
    parser.add_argument("--port", type=int, default=8760)
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--db-name", default="meshsite_bench_token")
    args = parser.parse_args()
    args.server_env, args.db_url_query, args.access_log = [], "", False
    mesh, stop = Server(args), threading.Event()
    try:
        mesh.create_database()
        machine = machine_info(mesh.dsn)
        results = asyncio.run(scenarios(args, mesh, stop))
    finally:
        mesh.close()
        mesh.drop_database()
    print(f"server: {args.server}")
    print_table(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"token-{stamp}.json"
    path.write_text(json.dumps({"server": args.server, "machine": machine,
                                "results": [asdict(r) for r in results]}, indent=2, default=str))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
