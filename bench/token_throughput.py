"""Token endpoint: tokens/s with 1 and N clients, and publish latency while wrong secrets flood it.

On bench/harness.py's scratch database, CLI-made key and servers under test:

  tokens fast   POST /oauth/token (client_credentials, HTTP Basic, the real key) -> 200, on the
                fast path (meshsite/platform/tokenpath.py), 1 and N clients; N clients with the
                secret in the body too
  tokens DOT    the same through django-oauth-toolkit (MESH_TOKEN_FAST_PATH=0), N clients
  publish quiet one publisher (qos 1, 1 KiB) and nothing else
  publish flood the same publisher while F clients (another process) send the real client id
                with a wrong secret as fast as the server answers them (401, then 429)

Each server in --servers (default uvicorn and daphne) runs the token scenarios; the flood runs
on the first, three times: with the default limits (the flooding address is refused 429 before
any work once it is past MESH_TOKEN_FAILURES_PER_ADDRESS, each 429 held for
MESH_TOKEN_REFUSAL_DELAY_MS and its connection closed), the same with the hold off
(MESH_TOKEN_REFUSAL_DELAY_MS=0, the refusals answered at once as before the hold), and with the
address limit off, as an attacker spread over many addresses would see it (the per-client
limit's 429s, after one statement each, held). The flood's clients reconnect when an answer
closes the connection. Not a test: nothing here asserts.
Results: bench/results/.

    .venv/bin/python bench/token_throughput.py
    .venv/bin/python bench/token_throughput.py --servers daphne --duration 5 --no-flood
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import multiprocessing
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    RESULTS,
    SERVERS,
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

    def __init__(self, client_id: str, secret: str, *, in_body: bool = False) -> None:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        if in_body:
            body = urlencode({"grant_type": "client_credentials", "client_id": client_id,
                              "client_secret": secret}).encode()
            self.raw = build_request("POST", TOKEN_PATH, form, body)
        else:
            basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
            self.raw = build_request("POST", TOKEN_PATH, {"Authorization": f"Basic {basic}", **form},
                                     b"grant_type=client_credentials")

    async def token(self, conn: Connection) -> str | None:
        status, _, body = await conn.request(self.raw)
        return None if status == 200 else f"token {status} {body[:120]!r}"


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


async def publish_under_flood(args: argparse.Namespace, mesh: Mesh, client: Client, stop: threading.Event,
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


async def token_scenarios(args: argparse.Namespace, mesh: Mesh, stop: threading.Event,
                          right: Tokens, in_body: Tokens) -> list[Result]:
    results = []
    for env, path in (([], "fast"), (["MESH_TOKEN_FAST_PATH=0"], "DOT")):
        mesh.args.server_env = env
        mesh.start(1)
        for clients, form, tokens in ((1, "basic", right), (args.clients, "basic", right),
                                      (args.clients, "body", in_body)):
            if path == "DOT" and (clients == 1 or form == "body"):
                continue  # the old path's number for comparison: 8 clients, the usual form
            results.append(await http_phase(f"tokens {path} {mesh.server} ({form})", "token", tokens, mesh.ports,
                                            clients, args.warmup, args.duration, mesh, stop))
    return results


async def flood_scenarios(args: argparse.Namespace, mesh: Mesh, stop: threading.Event, wrong: Tokens) -> list[Result]:
    results = []
    for env, tag in (([], "limits on"), (["MESH_TOKEN_REFUSAL_DELAY_MS=0"], "limits on, no hold"),
                     (["MESH_TOKEN_FAILURES_PER_ADDRESS=0"], "address limit off")):
        mesh.args.server_env = env
        mesh.start(1)
        token = mesh.token()
        if not results:
            mesh.create_queue(token)
        client = Client(token, b"x" * 1024)
        mesh.reset_messages()
        results.append(await http_phase(f"publish quiet ({tag})", "publish", client, mesh.ports, args.publishers,
                                        args.warmup, args.duration, mesh, stop))
        flooded, _ = await publish_under_flood(args, mesh, client, stop, wrong, f"publish flooded ({tag})")
        results.append(flooded)
    return results


async def scenarios(args: argparse.Namespace, mesh: Mesh, stop: threading.Event) -> list[Result]:
    oa2 = next(entry for entry in mesh.key["messaging"] if "httprest" in entry["protocol"])["oa2"]
    right, wrong = Tokens(oa2["clientid"], oa2["clientsecret"]), Tokens(oa2["clientid"], "wrong-secret")
    in_body = Tokens(oa2["clientid"], oa2["clientsecret"], in_body=True)
    results = []
    for server in args.servers:
        mesh.server = server
        results += await token_scenarios(args, mesh, stop, right, in_body)
        if args.flood and server == args.servers[0]:
            results += await flood_scenarios(args, mesh, stop, wrong)
    mesh.stop()
    return results


def print_table(results: list[Result]) -> None:
    print(f"{'scenario':40} {'clients':>7} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  flood")
    for r in results:
        flood_note = ""
        if "flood_statuses" in r.notes:
            flood_note = f"{r.notes['flood_requests_per_s']}/s {r.notes['flood_statuses']}"
        print(f"{r.scenario:40} {r.concurrency:>7} {r.ops_per_s:>9} {r.p50_ms:>8} {r.p99_ms:>8} {r.errors:>6}  "
              f"{flood_note}")
        print(f"{'':40} machine busy {r.notes.get('machine_busy_pct')}%, "
              f"other processes {r.notes.get('other_processes_pct')}%, "
              f"server {r.notes.get('server_us_per_op')} us/op")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="uvicorn,daphne", help=f"comma-separated, of {', '.join(SERVERS)}")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=8, help="token clients (default 8)")
    parser.add_argument("--publishers", type=int, default=1, help="publishers, quiet and flooded (default 1)")
    parser.add_argument("--flood", type=int, default=32, help="wrong-secret clients (default 32; 0: no flood)")
    parser.add_argument("--no-flood", dest="flood", action="store_const", const=0)
    parser.add_argument("--port", type=int, default=8760)
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--db-name", default="meshsite_bench_token")
    args = parser.parse_args()
    args.servers = [name for name in args.servers.split(",") if name]
    if any(name not in SERVERS for name in args.servers):
        parser.error(f"--servers: each of {', '.join(SERVERS)}")
    args.server, args.server_env, args.db_url_query, args.access_log = args.servers[0], [], "", False
    mesh, stop = Mesh(args), threading.Event()
    try:
        mesh.create_database()
        machine = machine_info(mesh.dsn)
        results = asyncio.run(scenarios(args, mesh, stop))
    finally:
        mesh.close()
        mesh.drop_database()
    print(f"servers: {', '.join(args.servers)}")
    print_table(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"token-{stamp}.json"
    path.write_text(json.dumps({"servers": args.servers, "machine": machine,
                                "results": [asdict(r) for r in results]}, indent=2, default=str))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
