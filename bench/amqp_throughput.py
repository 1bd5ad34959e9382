"""AMQP 1.0 and JSON over WebSocket: the issue's goals on one server process, beside the raw
PostgreSQL batched-insert rate of the same run.

  raw batched insert  INSERT of 100 rows per statement (autocommit, synchronous_commit on),
                      1 and 4 connections: the rate the store could take
  amqp publish        one AMQP connection, a sender link on a queue, unsettled and pipelined
                      (--window messages in flight), each settled Accepted after its commit
  amqp consume        a receiver link with credit --window on the queue the publish filled,
                      every message settled Accepted
  latency             REST publish (one keep-alive client, open loop at --rate msgs/s) to a
                      queue that an AMQP receiver (then a JSON subscription) consumes;
                      publish-to-arrival p50 / p99
  json publish        one JSON connection, --window publishes unanswered, base64 bodies
  json consume        a JSON subscription with credit --window, acks in batches of a tenth
  idle connections    --idle AMQP connections opened and held with a 10 s idle timeout, so
                      heartbeats flow both ways; the server's RSS, and how many are still open
                      after --idle-hold seconds

On bench/harness.py's scratch database, CLI-made instance and key and a uvicorn server.
Not a test: nothing here asserts. Results: bench/results/.
    .venv/bin/python bench/amqp_throughput.py
    .venv/bin/python bench/amqp_throughput.py --duration 5 --idle 1000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    HOST,
    NAMESPACE,
    RAW_TABLE,
    Mesh,
    enc,
    goal_line,
    machine_info,
    percentile,
    save_results,
)
from meshsite.amqpclient import AmqpClient  # noqa: E402
from meshsite.wsclient import JsonClient  # noqa: E402

QUEUE = f"{NAMESPACE}/amqp-bench"
LATENCY_QUEUE = f"{NAMESPACE}/amqp-latency"


def raw_batched_insert(dsn: str, connections: int, duration: float, payload: bytes, batch: int = 100) -> float:
    """Rows per second, `batch` rows per INSERT, `connections` in parallel (threads)."""
    import threading

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {RAW_TABLE}")
    counts = [0] * connections
    deadline = time.perf_counter() + duration
    rows = ", ".join(["(1, %s, now())"] * batch)
    sql = f"INSERT INTO {RAW_TABLE} (queue_id, payload, created_at) VALUES {rows}"  # noqa: S608

    def work(slot: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET synchronous_commit TO on")
            cursor = conn.cursor()
            while time.perf_counter() < deadline:
                cursor.execute(sql, [payload] * batch, prepare=True)
                counts[slot] += batch

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def ws_url(mesh: Mesh) -> str:
    return f"ws://{HOST}:{mesh.ports[0]}/protocols/amqp10ws"


async def amqp_publish(url: str, token: str, duration: float, window: int, payload: bytes) -> dict[str, Any]:
    async with await AmqpClient.connect(url, token=token) as client:
        sender = await client.sender(f"queue:{QUEUE}")
        in_flight: set[asyncio.Future[Any]] = set()
        accepted = refused = 0
        deadline = time.perf_counter() + duration
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            while len(in_flight) < window:
                in_flight.add(sender.send_nowait(payload, content_type="application/octet-stream"))
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                if future.result().state == "accepted":
                    accepted += 1
                else:
                    refused += 1
        for future in asyncio.as_completed(in_flight):
            outcome = await future
            accepted += outcome.state == "accepted"
        elapsed = time.perf_counter() - started
    return {"accepted": accepted, "refused": refused, "seconds": elapsed, "rate": accepted / elapsed}


async def amqp_consume(url: str, token: str, duration: float, window: int) -> dict[str, Any]:
    async with await AmqpClient.connect(url, token=token) as client:
        receiver = await client.receiver(f"queue:{QUEUE}", credit=window)
        received = 0
        deadline = time.perf_counter() + duration
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            try:
                message = await receiver.receive(timeout=2)
            except TimeoutError:
                break  # the queue is empty
            # Settled without waiting for the socket: a consumer that processes messages as
            # they come does not stop for each acknowledgement's write.
            message.accept_nowait()
            received += 1
            if received % (window // 2 or 1) == 0:
                receiver.flow(window // 2 or 1)
        elapsed = time.perf_counter() - started
    return {"received": received, "seconds": elapsed, "rate": received / elapsed}


class AmqpArrivals:
    """An AMQP receiver on the latency queue; each arrival's age in seconds."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    async def run(self, arrivals: list[float], ready: asyncio.Event) -> None:
        async with await AmqpClient.connect(self.url, token=self.token) as client:
            receiver = await client.receiver(f"queue:{LATENCY_QUEUE}", credit=500)
            ready.set()
            while True:
                message = await receiver.receive(timeout=None)
                arrivals.append(time.time() - json.loads(message.body)["t"])
                await message.accept()
                receiver.flow(1)


class JsonArrivals:
    """A JSON WebSocket subscription on the latency queue; each arrival's age in seconds."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    async def run(self, arrivals: list[float], ready: asyncio.Event) -> None:
        async with await JsonClient.connect(self.url, token=self.token) as client:
            await client.subscribe("s", queue=LATENCY_QUEUE, credit=500)
            ready.set()
            while True:
                message = await client.expect("message", timeout=3600)
                arrivals.append(time.time() - json.loads(message["body"])["t"])
                await client.send(op="ack", sub="s", tag=message["tag"])
                await client.send(op="credit", sub="s", credit=1)


async def latency(mesh: Mesh, consumer: AmqpArrivals | JsonArrivals, token: str, duration: float,
                  rate: int) -> dict[str, Any]:
    arrivals: list[float] = []
    ready = asyncio.Event()
    task = asyncio.create_task(consumer.run(arrivals, ready))
    await asyncio.wait_for(ready.wait(), 30)
    path = f"/messagingrest/v1/queues/{enc(LATENCY_QUEUE)}/messages"
    headers = {"Authorization": f"Bearer {token}", "x-qos": "1", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{mesh.ports[0]}") as http:
        interval = 1 / rate
        next_at = time.perf_counter()
        deadline = next_at + duration
        while next_at < deadline:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            body = json.dumps({"t": time.time()})
            response = await http.post(path, content=body, headers=headers)
            response.raise_for_status()
            next_at += interval
    await asyncio.sleep(1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    values = sorted(arrivals)
    return {"received": len(values), "p50_ms": percentile(values, 0.5) * 1000,
            "p99_ms": percentile(values, 0.99) * 1000}


async def json_publish(url: str, token: str, duration: float, window: int, payload: bytes) -> dict[str, Any]:
    """Pipelined JSON publishes (--window unanswered), base64 bodies, to the bench queue."""
    body = base64.b64encode(payload).decode()
    async with await JsonClient.connect(url, token=token) as client:
        sent = answered = refused = 0
        started = time.perf_counter()
        deadline = started + duration
        while time.perf_counter() < deadline or answered < sent:
            while sent - answered < window and time.perf_counter() < deadline:
                await client.send(op="publish", queue=QUEUE, body=body, encoding="base64")
                sent += 1
            answer = json.loads(await client.ws.recv())
            answered += 1
            refused += answer["op"] != "published"
        elapsed = time.perf_counter() - started
    return {"published": answered - refused, "refused": refused, "seconds": elapsed,
            "rate": (answered - refused) / elapsed}


async def json_consume(url: str, token: str, duration: float, window: int) -> dict[str, Any]:
    """A JSON queue subscription with credit --window, acknowledged in batches of a tenth of it."""
    async with await JsonClient.connect(url, token=token) as client:
        await client.subscribe("s", queue=QUEUE, credit=window)
        received = 0
        tags: list[str] = []
        started = time.perf_counter()
        deadline = started + duration
        while time.perf_counter() < deadline:
            try:
                frame = json.loads(await asyncio.wait_for(client.ws.recv(), 2))
            except TimeoutError:
                break  # the queue is empty
            if frame.get("op") != "message":
                continue
            received += 1
            tags.append(frame["tag"])
            if len(tags) >= max(1, window // 10):
                await client.send(op="ack", sub="s", tags=tags)
                await client.send(op="credit", sub="s", credit=len(tags))
                tags = []
        if tags:
            await client.send(op="ack", sub="s", tags=tags)
        elapsed = time.perf_counter() - started
    return {"received": received, "seconds": elapsed, "rate": received / elapsed}


def _idle_worker(url: str, token: str, count: int, hold: float, out: Any) -> None:
    async def run() -> tuple[int, int]:
        clients = []
        for _ in range(count):
            with contextlib.suppress(Exception):  # one that fails is counted as not opened
                clients.append(await AmqpClient.connect(url, token=token, idle_timeout=10))
        opened = len(clients)
        await asyncio.sleep(hold)
        alive = sum(not client.closed for client in clients)
        out.put(("rss", None))
        await asyncio.sleep(2)
        for client in clients:
            await client.abort()
        return opened, alive

    out.put(asyncio.run(run()))


def idle_connections(mesh: Mesh, token: str, total: int, hold: float, workers: int) -> dict[str, Any]:
    rss_before = _rss(mesh.pids[0])
    queue: multiprocessing.Queue = multiprocessing.Queue()
    share = [total // workers + (1 if index < total % workers else 0) for index in range(workers)]
    processes = [multiprocessing.Process(target=_idle_worker, args=(ws_url(mesh), token, count, hold, queue))
                 for count in share]
    for process in processes:
        process.start()
    results, rss_held = [], 0
    while len(results) < workers:
        item = queue.get()
        if item == ("rss", None):
            rss_held = max(rss_held, _rss(mesh.pids[0]))
        else:
            results.append(item)
    for process in processes:
        process.join()
    return {"asked": total, "opened": sum(r[0] for r in results), "alive_after_hold": sum(r[1] for r in results),
            "hold_seconds": hold, "server_rss_mib_before": rss_before, "server_rss_mib_held": rss_held}


def _rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario (default 10)")
    parser.add_argument("--window", type=int, default=500, help="messages in flight / credit (default 500)")
    parser.add_argument("--payload", type=int, default=1024, help="message size in bytes (default 1024)")
    parser.add_argument("--rate", type=int, default=200, help="latency scenario publishes/s (default 200)")
    parser.add_argument("--idle", type=int, default=5000, help="idle connections (default 5000; 0 skips)")
    parser.add_argument("--idle-hold", type=float, default=30.0, help="seconds they are held (default 30)")
    parser.add_argument("--idle-workers", type=int, default=4, help="client processes holding them (default 4)")
    parser.add_argument("--port", type=int, default=8760, help="server port (default 8760)")
    parser.add_argument("--env", dest="server_env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the server (what-if runs)")
    parser.add_argument("--db-url-query", default="", help="query string appended to DATABASE_URL")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--db-name", default="meshsite_bench_amqp")
    args = parser.parse_args()
    args.server = "uvicorn"
    args.server_env = [f"MESH_MAX_CONNECTIONS_PER_INSTANCE={max(args.idle * 2, 500)}", *args.server_env]
    payload = b"x" * args.payload
    mesh = Mesh(args)
    output: dict[str, Any] = {"args": vars(args), "machine": machine_info(mesh.dsn.rsplit("/", 1)[0] + "/postgres")}
    try:
        mesh.create_database()
        mesh.start(1)
        token = mesh.token()
        mesh.create_queue(token, QUEUE)
        mesh.create_queue(token, LATENCY_QUEUE)
        raw = {f"{n} connections": raw_batched_insert(mesh.dsn, n, args.duration, payload) for n in (1, 4)}
        print("raw batched insert rows/s:", {k: round(v) for k, v in raw.items()})
        url = ws_url(mesh)
        publish = asyncio.run(amqp_publish(url, token, args.duration, args.window, payload))
        print("amqp publish:", {k: round(v, 1) for k, v in publish.items()})
        consume = asyncio.run(amqp_consume(url, token, args.duration, args.window))
        print("amqp consume+accept:", {k: round(v, 1) for k, v in consume.items()})
        late = asyncio.run(latency(mesh, AmqpArrivals(url, token), token, args.duration, args.rate))
        print("latency REST -> AMQP:", {k: round(v, 2) for k, v in late.items()})
        json_url = f"ws://{HOST}:{mesh.ports[0]}/ws/v1/"
        json_late = asyncio.run(latency(mesh, JsonArrivals(json_url, token), token, args.duration, args.rate))
        print("latency REST -> JSON:", {k: round(v, 2) for k, v in json_late.items()})
        json_pub = asyncio.run(json_publish(json_url, token, args.duration, args.window, payload))
        print("json publish:", {k: round(v, 1) for k, v in json_pub.items()})
        json_con = asyncio.run(json_consume(json_url, token, args.duration, args.window))
        print("json consume+ack:", {k: round(v, 1) for k, v in json_con.items()})
        idle = idle_connections(mesh, token, args.idle, args.idle_hold, args.idle_workers) if args.idle else {}
        if idle:
            print("idle connections:", idle)
        output.update(raw_batched_insert=raw, publish=publish, consume=consume, latency=late, idle=idle,
                      json_latency=json_late, json_publish=json_pub, json_consume=json_con)
        best_raw = max(raw.values())
        print()
        goal_line("AMQP publish >= 5,000 msgs/s", publish["rate"], publish["rate"] >= 5000, "msgs/s")
        goal_line("AMQP consume + accept >= 5,000 msgs/s", consume["rate"], consume["rate"] >= 5000, "msgs/s")
        goal_line("latency REST -> AMQP p50 <= 5 ms", late["p50_ms"], late["p50_ms"] <= 5, "ms")
        goal_line("latency REST -> AMQP p99 <= 25 ms", late["p99_ms"], late["p99_ms"] <= 25, "ms")
        goal_line("latency REST -> JSON p50 <= 5 ms", json_late["p50_ms"], json_late["p50_ms"] <= 5, "ms")
        goal_line("latency REST -> JSON p99 <= 25 ms", json_late["p99_ms"], json_late["p99_ms"] <= 25, "ms")
        if idle:
            ok = idle["alive_after_hold"] == args.idle and idle["server_rss_mib_held"] < 1024
            goal_line(f"{args.idle} idle connections, RSS < 1 GiB", idle["server_rss_mib_held"], ok, "MiB")
        print(f"publish / raw batched insert: {publish['rate'] / best_raw:.3f}x;"
              f" consume: {consume['rate'] / best_raw:.3f}x")
        output["median_raw"] = statistics.median(raw.values())
    finally:
        mesh.close()
        mesh.drop_database()
    return save_results(output, "amqp_throughput", time.strftime("%Y%m%d-%H%M%S"), lambda *_: None,
                        lambda *_: None)


if __name__ == "__main__":
    raise SystemExit(main())
