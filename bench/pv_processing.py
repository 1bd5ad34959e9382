#!/usr/bin/env python
"""Process Visibility processing: stored events folded into process instances, events/s,
beside PostgreSQL's batched insert of the same rows in the same run.

A scratch database is created and migrated; one Process Visibility instance gets the
order-to-cash scenario of the tests (two participants correlated by a business key, two
phases, calculated attributes, the default indicators) and --orders orders of 4 events each
(a quarter still open), written with COPY into the buffer. Then, in this process:

  1. baseline: the same rows INSERTed 100 per statement into a copy of the event table;
  2. processing of the whole buffer (`instance_process`, the beat job's and "process now"'s path);
  3. "clear processed data" and the rebuild from every stored event;
  4. a second buffer of --orders / 4 orders' late events (out of order, onto existing instances).

Results go to bench/results/ as JSON. Not a test.

    .venv/bin/python bench/pv_processing.py                    # about a minute
    .venv/bin/python bench/pv_processing.py --orders 100000
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--db-name", default="meshsite_bench_pv_processing")
    parser.add_argument("--batch", type=int, default=None, help="MESH_PV_PROCESSING_BATCH (default: the setting's)")
    parser.add_argument("--profile", action="store_true", help="cProfile the buffer phase; print the top functions")
    return parser.parse_args()


def scratch_database(args: argparse.Namespace) -> str:
    with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.db_name}"')
    url = f"{args.pg}/{args.db_name}".replace("postgresql://", "postgres://", 1)
    env = {**os.environ, "DATABASE_URL": url, "MESH_VAR_DIR": os.environ.get("MESH_VAR_DIR", "/tmp/meshsite-bench-pv")}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    os.environ.update(env, DJANGO_SETTINGS_MODULE="meshsite.settings")
    return url


def event_rows(instance_id: str, orders: range, start: datetime, *, late: bool = False) -> list[tuple]:
    """4 events per order over two participants; with late, only the delivery's last event."""
    rows = []
    now = datetime.now(UTC)
    rng = random.Random(orders.start)
    for n in orders:
        at = start + timedelta(minutes=n)
        order_id = str(n)
        context = json.dumps({"ORDER_ID": order_id, "COUNTRY": rng.choice(("DE", "FR", "US", "IN")),
                              "AMOUNT": rng.randint(10, 5000)})
        events = [("order", f"o-{n}", "CREATED", at, context),
                  ("order", f"o-{n}", "APPROVED", at + timedelta(hours=rng.randint(1, 48)), "{}"),
                  ("delivery", f"d-{n}", "SHIPPED", at + timedelta(days=rng.randint(1, 5)),
                   json.dumps({"ORDER_ID": order_id}))]
        if n % 4:
            events.append(("delivery", f"d-{n}", "DELIVERED", at + timedelta(days=rng.randint(6, 15)), "{}"))
        if late:
            events = [("delivery", f"d-{n}", "RETURNED", at + timedelta(days=1), "{}")]
        rows += [(instance_id, d, p, t, ts, c, now) for d, p, t, ts, c in events]
    return rows


COLUMNS = "instance_id, definition_id, process_instance_id, event_type, timestamp, context, received_at"


def copy_events(dsn: str, rows: list[tuple]) -> None:
    with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
        first = cursor.execute("SELECT coalesce(max(id), 0) FROM visibility_event").fetchone()[0]
        with cursor.copy(f"COPY visibility_event ({COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        # Into the buffer, as the Data Acquisition API does in the transaction that stores them.
        cursor.execute("INSERT INTO visibility_bufferedevent (event_id, instance_id) SELECT id, instance_id "
                       "FROM visibility_event e WHERE NOT EXISTS (SELECT 1 FROM visibility_bufferedevent b "
                       "WHERE b.event_id = e.id) AND e.id > %s ON CONFLICT DO NOTHING", [first])
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE visibility_event")
        # The writes so far (the baseline's too) flushed now rather than by a checkpoint in
        # the middle of the measured phase.
        conn.execute("CHECKPOINT")


def baseline(dsn: str, rows: list[tuple]) -> float:
    """Events/s for PostgreSQL alone: the same rows, 100 per INSERT, one transaction each."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_raw_event")
        conn.execute("CREATE TABLE bench_raw_event (LIKE visibility_event INCLUDING ALL)")
        chunk = 100
        values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * chunk)
        sql = f"INSERT INTO bench_raw_event ({COLUMNS}) VALUES {values}"
        began = time.perf_counter()
        done = 0
        for offset in range(0, len(rows) - chunk + 1, chunk):
            conn.execute(sql, [value for row in rows[offset:offset + chunk] for value in row], prepare=True)
            done += chunk
        elapsed = time.perf_counter() - began
        conn.execute("DROP TABLE bench_raw_event")
    return done / elapsed


def main() -> int:
    args = arguments()
    url = scratch_database(args)
    dsn = url.replace("postgres://", "postgresql://", 1)
    import django

    django.setup()
    from django.conf import settings

    from meshsite.platform.models import Subaccount
    from visibility.models import Event, ProcessInstance, RunTrigger
    from visibility.services import instance_process, scenario_data_clear
    from visibility.tests.factories import active_scenario, order_to_cash, pv_instance

    if args.batch:
        settings.MESH_PV_PROCESSING_BATCH = args.batch
    pv = pv_instance(Subaccount.objects.create(name="bench"))
    scenario = active_scenario(pv, order_to_cash())
    instance_process(instance=pv, trigger=RunTrigger.MANUAL)  # the activation's (empty) rebuild
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = event_rows(str(pv.pk), range(args.orders), start)
    raw = baseline(dsn, rows)
    copy_events(dsn, rows)
    results: dict[str, object] = {"orders": args.orders, "events": len(rows),
                                  "batch": settings.MESH_PV_PROCESSING_BATCH, "raw_insert_events_per_s": round(raw)}

    def timed(name: str, trigger: str) -> None:
        profile = cProfile.Profile() if args.profile and name == "buffer" else None
        began = time.perf_counter()
        if profile:
            profile.enable()
        [run] = instance_process(instance=pv, trigger=trigger)
        elapsed = time.perf_counter() - began
        if profile:
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        results[name] = {"events": run.events_processed, "seconds": round(elapsed, 2),
                         "events_per_s": round(run.events_processed / elapsed),
                         "created": run.instances_created, "updated": run.instances_updated}
        print(f"{name:>10}: {run.events_processed:,} events in {elapsed:.2f} s = "
              f"{run.events_processed / elapsed:,.0f} events/s ({run.instances_created:,} created, "
              f"{run.instances_updated:,} updated)")

    print(f"raw insert (100 rows per INSERT): {raw:,.0f} events/s")
    timed("buffer", RunTrigger.MANUAL)
    scenario_data_clear(scenario=scenario)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    timed("rebuild", RunTrigger.MANUAL)
    copy_events(dsn, event_rows(str(pv.pk), range(0, args.orders, 4), start, late=True))
    timed("late", RunTrigger.MANUAL)
    results["instances"] = ProcessInstance.objects.filter(scenario=scenario).count()
    results["stored_events"] = Event.objects.filter(instance=pv).count()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"pv_processing-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results: {path}")
    with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
        from django.db import connections

        connections.close_all()
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
