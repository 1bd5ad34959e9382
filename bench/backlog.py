#!/usr/bin/env python
"""Large queues: REST publish and consume+ack against an empty queue and against a queue of
1,000,000 waiting messages (with 100 other queues holding messages), same run, same server.

One scratch database and one server (uvicorn by default), then:

  1. the empty queue b/e/n/bench: publish (qos 1, 1 KiB) then consume+ack, at each concurrency;
  2. the backlog, written with SQL (INSERT ... SELECT generate_series) straight into the
     message table: --other-messages in each of --other-queues queues first (older ids, the
     worst case for a walk in id order), then --messages into b/e/n/backlog; VACUUM ANALYZE;
  3. the same phases against b/e/n/backlog: publish appends to it, consume+ack takes its head;
  4. with --explain, EXPLAIN (ANALYZE, BUFFERS) of the store's own statements on the backlog
     (messaging/store/statements.py, run in a Django process): the claim with a free head,
     with held head rows, with expired head rows on a respectTtl queue, behind 7 consumers'
     open claims, and the sweep's cleanup batches.

Prints the ratios backlog / empty. Results go to bench/results/ as JSON. Not a test.

    .venv/bin/python bench/backlog.py                       # about 4 minutes
    .venv/bin/python bench/backlog.py --messages 100000 --duration 5 --explain
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    NAMESPACE,
    QUEUE,
    RESULTS,
    SERVERS,
    Client,
    Mesh,
    Result,
    http_phase,
    machine_info,
    stop_on_signals,
)

BACKLOG = f"{NAMESPACE}/backlog"
OTHER = f"{NAMESPACE}/other"
PHASES = (("publish", "publish"), ("consume+ack", "consume_ack"))

FILL = """
INSERT INTO messaging_message (queue_id, uuid, payload, size, content_type, address, qos, created_at, expires_at,
                               delivery_count, claimed_by, death_reason, dead_from)
SELECT q.id, gen_random_uuid(), %(payload)s, length(%(payload)s), 'application/octet-stream', 'queue:' || q.name, 1,
       now(), now() + interval '30 days', 0, '', '', ''
  FROM messaging_queue q, generate_series(1, %(count)s)
 WHERE q.name LIKE %(names)s
"""


def fill(dsn: str, payload: bytes, others: int, backlog: int) -> dict[str, Any]:
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(FILL, {"payload": payload, "count": others, "names": f"{OTHER}%"})
        conn.execute(FILL, {"payload": payload, "count": backlog, "names": BACKLOG})
        conn.execute("VACUUM ANALYZE messaging_message")
        conn.execute("CHECKPOINT")  # else the fill's dirty pages are flushed during the measurement
        row = conn.execute("SELECT count(*), pg_total_relation_size('messaging_message') FROM messaging_message"
                           ).fetchone()
    assert row is not None
    settled = settle()
    return {"rows": row[0], "table_mb": round(row[1] / 2**20), "seconds": round(time.perf_counter() - started, 1),
            "settle_seconds": settled}


def settle(quiet_pct: float = 10.0, limit: float = 120.0) -> float:
    """After the fill: flush the page cache and wait until the machine is idle (busy below
    `quiet_pct` over a second), at most `limit` seconds. Without it the first phases measured
    the kernel writing back the fill's 1.5 GB (the client's own CPU per op rose by ~45 %)."""
    started = time.monotonic()
    os.sync()

    def busy_total() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:9]]
        return sum(values) - values[3] - values[4], sum(values)

    while time.monotonic() - started < limit:
        busy, total = busy_total()
        time.sleep(1.0)
        busy2, total2 = busy_total()
        if 100 * (busy2 - busy) / max(1, total2 - total) < quiet_pct:
            break
    return round(time.monotonic() - started, 1)


# The EXPLAIN scenarios, in a Django process: the statements come from the store itself.
EXPLAIN_CODE = r"""
import json, os
from datetime import timedelta
from django.db import connection, transaction
from django.utils import timezone
from messaging.models import Queue
from messaging.store import cleanup, rules, statements
from messaging.store.execute import adapt

backlog = Queue.objects.get(name=os.environ["BENCH_BACKLOG"])
other = Queue.objects.filter(name__startswith=os.environ["BENCH_OTHER"]).order_by("id").first()
scenario = os.environ["BENCH_SCENARIO"]

def explain(statement):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement.sql, [adapt(p) for p in statement.params])
        plan = [row[0] for row in cursor.fetchall()]
        transaction.set_rollback(True)  # measure, change nothing
    return plan

def claim(queue):
    now = timezone.now()
    return statements.claim(postgres=True, queue_id=queue.pk, respect_ttl=queue.respect_ttl, qos=1, now=now,
                            lock_until=now + timedelta(minutes=1), consumer="explain",
                            flow_limit=queue.max_delivered_unacked_msgs_per_flow,
                            redelivery_delay_ms=queue.redelivery_delay_in_ms,
                            max_redelivery_delay_ms=queue.max_redelivery_delay_in_ms)

plans = {}
if scenario == "claim":
    plans["claim, backlog queue"] = explain(claim(backlog))
    plans["claim, a small queue"] = explain(claim(other))
    check = statements.has_available(queue_id=backlog.pk, respect_ttl=False, now=timezone.now())
    plans["has_available, backlog queue"] = explain(statements.Statement(check.sql + " LIMIT 1", check.params))
else:
    plans[scenario] = explain(claim(backlog))
    now = timezone.now()
    if backlog.respect_ttl:
        plans["sweep: expiry batch"] = explain(statements.dead_letter_batch(
            postgres=True, queue_id=backlog.pk, condition=rules.expired_sql(now), order="expires_at",
            limit=int(os.environ["BENCH_SWEEP_BATCH"]), target_id=None, reason=cleanup.EXPIRED, dead_from=""))
print(json.dumps(plans))
"""


def explain(mesh: Mesh, args: argparse.Namespace) -> dict[str, list[str]]:
    held = args.held

    def run(scenario: str) -> dict[str, list[str]]:
        env = {"BENCH_BACKLOG": BACKLOG, "BENCH_OTHER": OTHER, "BENCH_SCENARIO": scenario,
               "BENCH_SWEEP_BATCH": str(args.sweep_batch)}
        return dict(json.loads(mesh.django(EXPLAIN_CODE, env).strip().splitlines()[-1]))

    def head(conn: psycopg.Connection, sql: str) -> None:
        conn.execute(f"UPDATE messaging_message SET {sql} WHERE id IN (SELECT id FROM messaging_message "  # noqa: S608
                     "WHERE queue_id = (SELECT id FROM messaging_queue WHERE name = %s) ORDER BY id LIMIT %s)",
                     (BACKLOG, held))
        conn.execute("VACUUM ANALYZE messaging_message")

    plans = run("claim")
    with psycopg.connect(mesh.dsn, autocommit=True) as conn:
        head(conn, "locked_until = now() + interval '1 hour', available_at = now() + interval '1 hour',"
                   " claim_id = gen_random_uuid(), claimed_by = 'other'")
        plans |= run(f"claim, {held:,} head rows held by other consumers")
        head(conn, "locked_until = NULL, available_at = NULL, claim_id = NULL, claimed_by = '',"
                   " expires_at = now() - interval '1 s'")
        conn.execute("UPDATE messaging_queue SET respect_ttl = true WHERE name = %s", (BACKLOG,))
        plans |= run(f"claim, {held:,} expired head rows (respectTtl)")
        conn.execute("UPDATE messaging_queue SET respect_ttl = false WHERE name = %s", (BACKLOG,))
        conn.execute("DELETE FROM messaging_message WHERE expires_at < now()")
    # Seven consumers with a claim open (not yet committed): the eighth skips their rows.
    holders = [psycopg.connect(mesh.dsn) for _ in range(7)]
    try:
        for holder in holders:
            holder.execute("SELECT id FROM messaging_message WHERE queue_id = (SELECT id FROM messaging_queue "
                           "WHERE name = %s) ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED", (BACKLOG,))
        plans |= run("claim, behind 7 open claims (SKIP LOCKED)")
    finally:
        for holder in holders:
            holder.close()
    return plans


def measure(label: str, client: Client, mesh: Mesh, args: argparse.Namespace, stop: threading.Event) -> list[Result]:
    results = []
    for concurrency in args.concurrency:
        for scenario, op in PHASES:
            result = asyncio.run(http_phase(f"{scenario} {label}", op, client, mesh.ports, concurrency, args.warmup,
                                            args.duration, mesh, stop))
            results.append(result)
            print(f"  {result.scenario:<22} c={concurrency}: {result.ops_per_s:8.1f} ops/s  p50 {result.p50_ms:.2f} ms"
                  f"  p99 {result.p99_ms:.2f} ms  errors {result.errors}"
                  + (f"  {result.notes['failures']}" if "failures" in result.notes else ""), flush=True)
    return results


def ratios(results: list[Result]) -> list[dict[str, Any]]:
    by_key = {(r.scenario, r.concurrency): r for r in results}
    summary = []
    for scenario, _ in PHASES:
        for (name, concurrency), empty in by_key.items():
            full = by_key.get((f"{scenario} backlog", concurrency))
            if name == f"{scenario} empty" and full and empty.ops_per_s:
                ratio = round(full.ops_per_s / empty.ops_per_s, 2)
                summary.append({"scenario": scenario, "concurrency": concurrency, "empty": empty.ops_per_s,
                                "backlog": full.ops_per_s, "ratio": ratio, "goal_met": ratio >= 0.8})
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages in the backlog queue")
    parser.add_argument("--other-queues", type=int, default=100)
    parser.add_argument("--other-messages", type=int, default=1000, help="messages in each other queue")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--payload", type=int, default=1024)
    parser.add_argument("--server", choices=SERVERS, default="uvicorn")
    parser.add_argument("--port", type=int, default=8730)
    parser.add_argument("--explain", action="store_true", help="also EXPLAIN the store's statements on the backlog")
    parser.add_argument("--held", type=int, default=10_000, help="head rows held (then expired) for --explain")
    parser.add_argument("--sweep-batch", type=int, default=1000, help="MESH_SWEEP_BATCH for --explain")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--db-name", default="meshsite_bench_backlog")
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()
    args.server_env, args.db_url_query = [], ""  # what Mesh reads
    stop = stop_on_signals()
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = os.urandom(args.payload)
    mesh = Mesh(args)
    output: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if k != "server_env"}}
    results: list[Result] = []
    try:
        print("setting up: database, migrate, instance, key ...", flush=True)
        mesh.create_database()
        output["machine"] = machine_info(mesh.dsn)
        mesh.start(1)
        token = mesh.token()
        for name in [QUEUE, BACKLOG, *(f"{OTHER}{n}" for n in range(args.other_queues))]:
            mesh.create_queue(token, name)
        results += measure("empty", Client(token, payload), mesh, args, stop)
        print(f"filling: {args.other_queues} x {args.other_messages:,} + {args.messages:,} messages ...", flush=True)
        output["fill"] = fill(mesh.dsn, payload, args.other_messages, args.messages)
        print(f"  {output['fill']}", flush=True)
        results += measure("backlog", Client(token, payload, BACKLOG), mesh, args, stop)
        mesh.stop()
        if args.explain and not stop.is_set():
            output["explain"] = explain(mesh, args)
            for label, plan in output["explain"].items():
                print(f"\n-- {label}\n" + "\n".join(plan))
    except KeyboardInterrupt:
        print("\ninterrupted; stopping", flush=True)
    finally:
        mesh.close()
        if not args.keep_db:
            mesh.drop_database()
    output["results"] = [asdict(r) for r in results]
    output["summary"] = ratios(results)
    print()
    for row in output["summary"]:
        print(f"{row['scenario']:<12} c={row['concurrency']}: backlog {row['backlog']:8.1f} / empty {row['empty']:8.1f}"
              f" = {row['ratio']:.2f}x  (goal >= 0.8x: {'met' if row['goal_met'] else 'NOT met'})")
    path = RESULTS / f"backlog-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(output, indent=2))
    print(f"\nresults: {path.relative_to(RESULTS.parent.parent)}")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
