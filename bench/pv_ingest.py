#!/usr/bin/env python
"""Process Visibility's Data Acquisition API on PostgreSQL, beside the raw batched insert.

Self-contained, on bench/harness.py: (re)creates a scratch database, migrates it, creates a
Process Visibility instance and a PVEventSender key with the CLI, takes a token from
/oauth/token, starts uvicorn (one process per port, as `make run` does) and for each
client concurrency (default 1 and 8) measures during a fixed window:

  ingest       POST /public/v1/events, a JSON array of --batch events (default 100, each
               with an eventId, so every row takes the ON CONFLICT path) -> 204

and, before and after, from the same number of connections (threads, psycopg 3):

  raw insert   one multi-row INSERT of the same --batch rows per statement, autocommit
               (synchronous_commit on), into a table shaped like visibility_event
               (same columns, the same unique (instance, event_id) and indexes)

It prints events/s (requests/s x batch), latency p50/p99 and CPU per request, and the goal
(5,000 events/s in batches of 100 on 2 cores). Results go to bench/results/ as JSON.
Not a test: nothing here asserts.

    .venv/bin/python bench/pv_ingest.py
    .venv/bin/python bench/pv_ingest.py --servers 2 --concurrency 4,16 --duration 5
    .venv/bin/python bench/pv_ingest.py --profile        # py-spy flame graph of one server

Ctrl-C stops it; its servers are stopped and the scratch database dropped unless --keep-db.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    HOST,
    RESULTS,
    Connection,
    Mesh,
    Result,
    _sleep_until,
    build_request,
    find_py_spy,
    goal_line,
    http_phase,
    machine_info,
    save_results,
    snapshot,
    start_py_spy,
    stop_on_signals,
    summarize,
)

EVENTS = "/public/v1/events"
GOAL_EVENTS_PER_S = 5000
RAW_TABLE = "bench_raw_event"


def events(batch: int, serial: itertools.count) -> list[dict[str, Any]]:
    """A batch as a sender's would look: ids, a number process instance id, a small context."""
    rows = []
    for _ in range(batch):
        n = next(serial)
        rows.append({"eventId": f"e{n}", "processDefinitionId": "onboard", "processInstanceId": n // 4,
                     "eventType": ("CREATED", "SCREENED", "OFFER", "HIRED")[n % 4],
                     "timestamp": "2024-05-01T10:00:00Z",
                     "context": {"CANDIDATE_ID": n, "COUNTRY": "United Kingdom", "JOB_APP_STATUS": "Offer"}})
    return rows


class PVMesh(Mesh):
    """The harness's scratch database and servers, with a Process Visibility instance and key."""

    def create_database(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.args.db_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.args.db_name}"')
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("create_service", "process-visibility", "standard", "pv-bench")
        self.key = json.loads(self.manage("create_service_key", "pv-bench", "k", "-c",
                                          json.dumps({"roles": ["PVEventSender"]})))
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {RAW_TABLE} (LIKE visibility_event INCLUDING ALL)")

    def token(self) -> str:
        uaa = self.key["uaa"]
        response = httpx.post(f"http://{HOST}:{self.ports[0]}/oauth/token", data={"grant_type": "client_credentials"},
                              auth=(uaa["clientid"], uaa["clientsecret"]), timeout=30)
        response.raise_for_status()
        return str(response.json()["access_token"])

    def instance_id(self) -> str:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT id FROM platform_serviceinstance WHERE name = 'pv-bench'").fetchone()
        assert row is not None
        return str(row[0])

    def reset_events(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE visibility_bufferedevent, visibility_event")
            conn.execute("VACUUM ANALYZE visibility_event")


class Sender:
    """http_phase's client: each call POSTs a fresh batch (new eventIds) as prepared bytes."""

    def __init__(self, token: str, batch: int, pool: int = 64) -> None:
        serial = itertools.count()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.requests = [build_request("POST", EVENTS, headers, json.dumps(events(batch, serial)).encode())
                         for _ in range(pool)]
        self.next = itertools.cycle(self.requests)

    async def ingest(self, conn: Connection) -> str | None:
        status, _, body = await conn.request(next(self.next))
        return None if status == 204 else f"ingest {status} {body[:200]!r}"


def raw_batched_insert(mesh: PVMesh, concurrency: int, batch: int, warmup: float, duration: float,
                       stop: threading.Event) -> Result:
    """The same rows as the API stores, one multi-row INSERT per batch, autocommit."""
    instance = mesh.instance_id()
    with psycopg.connect(mesh.dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {RAW_TABLE}")
    columns = ("instance_id, event_id, definition_id, process_instance_id, event_type, timestamp, context, "
               "received_at")
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, now())"] * batch)
    sql = f"INSERT INTO {RAW_TABLE} ({columns}) VALUES {values}"
    start = time.perf_counter() + 0.3
    measure_from, deadline = start + warmup, start + warmup + duration
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    serial = itertools.count()
    lock = threading.Lock()

    def params() -> list[Any]:
        with lock:
            rows = events(batch, serial)
        return [value for e in rows for value in (
            instance, e["eventId"], e["processDefinitionId"], str(e["processInstanceId"]), e["eventType"],
            e["timestamp"], json.dumps(e["context"]))]

    def work(slot: int) -> None:
        with psycopg.connect(mesh.dsn, autocommit=True) as conn:
            conn.execute("SET synchronous_commit TO on")
            while time.perf_counter() < start:
                time.sleep(0.001)
            while not stop.is_set() and (began := time.perf_counter()) < deadline:
                conn.execute(sql, params(), prepare=True)
                if began >= measure_from:
                    latencies[slot].append(time.perf_counter() - began)

    threads = [threading.Thread(target=work, args=(slot,), daemon=True) for slot in range(concurrency)]
    for thread in threads:
        thread.start()
    _sleep_until(measure_from, stop)
    before = snapshot([], mesh.dsn)
    _sleep_until(deadline, stop)
    after = snapshot([], mesh.dsn)
    for thread in threads:
        thread.join()
    return summarize("raw insert", concurrency, 0, [v for chunk in latencies for v in chunk], 0, duration,
                     before, after, {"batch": batch})


def events_per_s(result: Result, batch: int) -> float:
    return round(result.ops_per_s * batch, 1)


def report(label: str, result: Result, batch: int) -> None:
    print(f"  {label:<11} c={result.concurrency} procs={result.servers}: {events_per_s(result, batch):9.1f} events/s "
          f"({result.ops_per_s:7.1f} req/s)  p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  "
          f"errors {result.errors}  other CPU {result.notes.get('other_processes_pct')}%"
          + (f"  {result.notes['failures']}" if "failures" in result.notes else ""), flush=True)


async def profile(args: argparse.Namespace, mesh: PVMesh, sender: Sender, stamp: str,
                  stop: threading.Event) -> dict[str, Any]:
    py_spy = find_py_spy()
    if not py_spy:
        return {}
    raw, svg = RESULTS / f"pv_ingest-{stamp}.txt", RESULTS / f"pv_ingest-{stamp}.svg"
    samplers = start_py_spy(py_spy, mesh.pids[0], 200, raw, svg, seconds=args.duration + 1)
    await http_phase("ingest", "ingest", sender, mesh.ports[:1], max(args.concurrency), 0.5, args.duration, mesh,  # type: ignore[arg-type]
                     stop)
    for sampler in samplers:
        sampler.wait(timeout=60)
    return {"flamegraph": str(svg), "raw": str(raw)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each (default 1)")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8],
                        help="comma-separated client counts (default 1,8)")
    parser.add_argument("--servers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                        help="comma-separated uvicorn process counts (default 1,2)")
    parser.add_argument("--batch", type=int, default=100, help="events per request (default 100)")
    parser.add_argument("--port", type=int, default=8760, help="first server port (default 8760)")
    parser.add_argument("--profile", action="store_true", help="also a py-spy flame graph of one server")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the servers (what-if runs), repeatable")
    parser.add_argument("--db-url-query", default="", help="query string appended to the servers' DATABASE_URL")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--db-name", default="meshsite_bench_pv", help="scratch database, dropped and recreated")
    parser.add_argument("--keep-db", action="store_true", help="leave the scratch database at the end")
    args = parser.parse_args()
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", args.db_name):
        parser.error("--db-name must be a plain lower-case identifier")
    args.server = "uvicorn"
    return args


def run(args: argparse.Namespace, mesh: PVMesh, stop: threading.Event, output: dict[str, Any]) -> list[Result]:
    results: list[Result] = []

    def raw_phase(label: str) -> None:
        for concurrency in args.concurrency:
            result = raw_batched_insert(mesh, concurrency, args.batch, args.warmup, args.duration, stop)
            result.notes["when"] = label
            results.append(result)
            report("raw insert", result, args.batch)

    raw_phase("before")
    token = ""
    for processes in args.servers:
        mesh.start(processes)
        token = token or mesh.token()
        sender = Sender(token, args.batch)
        for concurrency in args.concurrency:
            mesh.reset_events()
            # http_phase only calls getattr(client, "ingest"): any object with that method will do.
            result = asyncio.run(http_phase("ingest", "ingest", sender, mesh.ports, concurrency, args.warmup,  # type: ignore[arg-type]
                                            args.duration, mesh, stop))
            results.append(result)
            report("ingest", result, args.batch)
        if args.profile and processes == args.servers[-1] and not stop.is_set():
            output["profile"] = asyncio.run(profile(args, mesh, sender, output["stamp"], stop))
        mesh.stop()
    raw_phase("after")
    return results


def main() -> int:
    args = parse_args()
    stop = stop_on_signals()
    RESULTS.mkdir(parents=True, exist_ok=True)
    output: dict[str, Any] = {"stamp": time.strftime("%Y%m%d-%H%M%S"), "config": dict(vars(args))}
    mesh = PVMesh(args)
    results: list[Result] = []
    try:
        print("setting up: database, migrate, instance, key ...", flush=True)
        mesh.create_database()
        output["machine"] = {**machine_info(mesh.dsn), "loadavg_at_start": os.getloadavg()}
        results = run(args, mesh, stop, output)
    except KeyboardInterrupt:
        stop.set()
        print("\ninterrupted; stopping", flush=True)
    finally:
        mesh.close()
        if not args.keep_db:
            mesh.drop_database()
    if not results:
        return 1
    ingest = [r for r in results if r.scenario == "ingest"]
    best = max(ingest, key=lambda r: r.ops_per_s, default=None)
    raw_best = max((r for r in results if r.scenario == "raw insert"), key=lambda r: r.ops_per_s, default=None)
    if best and raw_best:
        print(f"\nbest ingest {events_per_s(best, args.batch)} events/s (c={best.concurrency}, "
              f"procs={best.servers}); raw batched insert best {events_per_s(raw_best, args.batch)} events/s")
        goal_line(f"ingest >= {GOAL_EVENTS_PER_S} events/s, batches of {args.batch}",
                  events_per_s(best, args.batch), events_per_s(best, args.batch) >= GOAL_EVENTS_PER_S, " events/s")
    output["results"] = [asdict(r) for r in results]
    return save_results(output, "pv_ingest", output["stamp"], lambda _: None, lambda _: None)


if __name__ == "__main__":
    sys.exit(main())
