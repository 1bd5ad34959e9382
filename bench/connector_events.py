#!/usr/bin/env python
"""Connector events on PostgreSQL: vendor-webhook intake and notification delivery, beside
the raw single-row insert measured in the same run.

On bench/harness.py (scratch database, uvicorn processes, a recording receiver, one Celery
worker): an open-connectors instance, and a HubSpot connector instance whose callback URL is
the receiver, made in a Django shell. Then:

  intake     POST /elements/api-v2/events/hubspot/<token>/, a HubSpot-style array of
             --objects (default 20) changes -> 200 once stored, for each client
             concurrency (default 1,8) and uvicorn process count (default 1,2); no worker
             runs, so this is the request's own cost (one INSERT, one wake-up to Redis).
  delivery   one worker (`--pool=threads --concurrency=4`) running, --fill bodies of
             --fill-objects (default 45: 3 notifications of 20, 20, 5, each with the whole
             body, signed) posted from 8 connections; the worker normalizes, pages, queues
             and pushes them. From the first POST to the last notification at the receiver.
  raw insert the same body as one durable single-row INSERT (autocommit), before and after.

    .venv/bin/python bench/connector_events.py
    .venv/bin/python bench/connector_events.py --duration 5 --servers 1 --fill 500
    .venv/bin/python bench/connector_events.py --vendor-secret s3cret   # signed intake

Goal (issue 17): intake >= 2,000 event objects/s on 2 cores. Not a test: nothing here
asserts. Ctrl-C stops it; its processes are stopped and the scratch database dropped unless
--keep-db. Results: bench/results/connector_events-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
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

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as rt  # noqa: E402

GOAL_OBJECTS_PER_S = 2000
SETUP = """
import json
from meshsite.platform.services import entitlement_put, instance_create, subaccount_default
from messaging.connectors.instances import connector_instance_create
subaccount = subaccount_default()
entitlement_put(subaccount=subaccount, service="open-connectors", plan="standard", quota=1)
owner = instance_create(subaccount=subaccount, service="open-connectors", plan="standard", name="oc-bench")
connector = connector_instance_create(service_instance=owner, name="crm", element_key="hubspot", configuration={{
    "event.notification.enabled": True, "event.vendor.type": "webhook",
    "event.notification.callback.url": "{callback}", "event.notification.signature.key": "bench-key",
    **({{"event.vendor.secret": "{vendor_secret}"}} if "{vendor_secret}" else {{}})}})
print(json.dumps({{"token": connector.webhook_token}}))
"""


def hubspot(objects: int, serial: itertools.count) -> bytes:
    kinds = ("contact.creation", "contact.propertyChange", "deal.creation")
    changes = []
    for _ in range(objects):
        n = next(serial)
        changes.append({"eventId": n, "subscriptionId": 4711, "portalId": 62515, "appId": 1160452,
                        "occurredAt": 1767261600000 + n, "subscriptionType": kinds[n % 3], "attemptNumber": 0,
                        "objectId": 100000 + n, "changeSource": "CRM", "propertyName": "email",
                        "propertyValue": f"person{n}@example.com"})
    return json.dumps(changes).encode()


class ConnectorMesh(rt.Mesh):
    def env(self, port: int | None = None, server: bool = False) -> dict[str, str]:
        env = super().env(port, server=True)
        env.update(REDIS_URL=self.args.redis_url, MESH_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8",
                   MESH_WEBHOOK_RESUME_RATE="0", MESH_SWEEP_INTERVAL="1")
        return env

    def create_database(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.args.db_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.args.db_name}"')
        self.manage("migrate", "--noinput", "-v", "0")
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {rt.RAW_TABLE} (id bigserial PRIMARY KEY, queue_id bigint NOT NULL, "
                         "payload bytea NOT NULL, created_at timestamptz NOT NULL)")

    def setup_connector(self, callback: str) -> str:
        out = self.django(SETUP.format(callback=callback, vendor_secret=self.args.vendor_secret))
        return str(json.loads(out.strip().splitlines()[-1])["token"])

    def sql(self, statement: str) -> Any:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(statement)  # type: ignore[call-overload]
            return cursor.fetchone() if cursor.description else None

    def reset(self) -> None:
        from redis import Redis

        self.sql("TRUNCATE messaging_vendorevent, messaging_connectornotification, messaging_message,"
                 " messaging_deliveryattempt CASCADE")
        Redis.from_url(self.args.redis_url).delete("celery")  # the wake-ups no worker took


def hubspot_v3(secret: str, path: str, body: bytes) -> dict[str, str]:
    """HubSpot's v3 signature headers of a POST to `path` on the harness's host, signed now
    (a timestamp stays good for MESH_CONNECTOR_SIGNATURE_MAX_AGE, 5 minutes)."""
    timestamp = str(int(time.time() * 1000))
    signed = b"POST" + f"http://{rt.HOST}{path}".encode() + body + timestamp.encode()
    digest = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    return {"X-HubSpot-Signature-v3": digest, "X-HubSpot-Request-Timestamp": timestamp}


class Provider:
    """http_phase's client: each call POSTs a prepared body to the instance's events URL,
    signed as HubSpot does when the instance has a vendor secret."""

    def __init__(self, token: str, objects: int, pool: int = 64, secret: str = "") -> None:
        serial = itertools.count()
        path = f"/elements/api-v2/events/hubspot/{token}/"
        headers = {"Content-Type": "application/json", "X-HubSpot-Signature-Version": "v3"}
        self.requests = []
        for _ in range(pool):
            body = hubspot(objects, serial)
            signature = hubspot_v3(secret, path, body) if secret else {}
            self.requests.append(rt.build_request("POST", path, {**headers, **signature}, body))
        self.next = itertools.cycle(self.requests)

    async def post(self, conn: rt.Connection) -> str | None:
        status, _, body = await conn.request(next(self.next))
        return None if status == 200 else f"intake {status} {body[:200]!r}"


def objects_per_s(result: rt.Result, objects: int) -> float:
    return round(result.ops_per_s * objects, 1)


def report(label: str, result: rt.Result, objects: int) -> None:
    print(f"  {label:<10} c={result.concurrency} procs={result.servers}: {objects_per_s(result, objects):9.1f} "
          f"objects/s ({result.ops_per_s:7.1f} bodies/s)  p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  "
          f"errors {result.errors}  other CPU {result.notes.get('other_processes_pct')}%", flush=True)


def delivery(mesh: ConnectorMesh, receiver: rt.Receiver, side: rt.SideProcesses, token: str,
             stop: threading.Event) -> dict[str, Any]:
    """--fill bodies posted as fast as 8 connections go while one worker turns them into
    deliveries: from the first POST to the last notification at the receiver."""
    args = mesh.args
    mesh.reset()
    rt.start_celery_worker(side, mesh.env(), args.redis_url, args.worker_concurrency, beat=True)
    receiver.reset()
    provider = Provider(token, args.fill_objects, pool=16, secret=args.vendor_secret)
    expected = args.fill * -(-args.fill_objects // 20)
    before, started = rt.take_roles({"server": mesh.pids, **side.pids()}, mesh.dsn), time.monotonic()
    asyncio.run(fill(mesh, provider, args.fill))
    posted = time.monotonic() - started
    while not stop.is_set() and receiver.count() < expected and time.monotonic() < started + args.timeout:
        stop.wait(0.05)
    after = rt.take_roles({"server": mesh.pids, **side.pids()}, mesh.dsn)
    arrivals = sorted(row[0] for row in receiver.arrivals())
    seconds = (arrivals[-1] - started) if arrivals else time.monotonic() - started
    return {"bodies": args.fill, "objects_per_body": args.fill_objects, "expected": expected,
            "delivered": len(arrivals), "posting_s": round(posted, 2), "seconds": round(seconds, 2),
            "notifications_per_s": round(len(arrivals) / seconds, 1),
            "objects_per_s": round(len(arrivals) / expected * args.fill * args.fill_objects / seconds, 1),
            **rt.cpu_per_op(before, after, len(arrivals))}


async def fill(mesh: ConnectorMesh, provider: Provider, bodies: int) -> None:
    conns = [rt.Connection(mesh.ports[i % len(mesh.ports)], None) for i in range(8)]
    await asyncio.gather(*(conn.open() for conn in conns))
    remaining = itertools.count()

    async def work(conn: rt.Connection) -> None:
        while next(remaining) < bodies:
            failure = await provider.post(conn)
            if failure:
                raise SystemExit(failure)

    await asyncio.gather(*(work(conn) for conn in conns))
    for conn in conns:
        conn.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each (default 1)")
    parser.add_argument("--concurrency", type=ints, default=[1, 8], help="client counts (default 1,8)")
    parser.add_argument("--servers", type=ints, default=[1, 2], help="uvicorn process counts (default 1,2)")
    parser.add_argument("--objects", type=int, default=20, help="changed objects per intake body (default 20)")
    parser.add_argument("--fill", type=int, default=2000, help="bodies for the delivery scenario (default 2000)")
    parser.add_argument("--fill-objects", type=int, default=45, help="objects per delivery body (default 45)")
    parser.add_argument("--worker-concurrency", type=int, default=4, help="worker threads (default 4)")
    parser.add_argument("--timeout", type=float, default=600.0, help="delivery scenario limit, s (default 600)")
    parser.add_argument("--vendor-secret", default="",
                        help="give the instance this event.vendor.secret and sign every body as HubSpot does (v3)")
    parser.add_argument("--port", type=int, default=8790, help="first server port (default 8790)")
    parser.add_argument("--receiver-port", type=int, default=8789)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--db-url-query", default="")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--db-name", default="meshsite_bench_connectors", help="scratch database, recreated")
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", args.db_name):
        parser.error("--db-name must be a plain lower-case identifier")
    args.server = "uvicorn"
    return args


def run(args: argparse.Namespace, mesh: ConnectorMesh, stop: threading.Event,
        output: dict[str, Any]) -> list[rt.Result]:
    results: list[rt.Result] = []
    body = hubspot(args.objects, itertools.count())

    def raw_phase(label: str) -> None:
        for concurrency in args.concurrency:
            result = rt.raw_insert(mesh.dsn, concurrency, args.warmup, args.duration, body, stop)
            result.notes["when"] = label
            results.append(result)
            report("raw insert", result, args.objects)

    raw_phase("before")
    side = rt.SideProcesses(mesh.var_dir)
    receiver = rt.Receiver(side, args.receiver_port)
    token = mesh.setup_connector(receiver.url("/hook/crm"))
    try:
        for processes in args.servers:
            mesh.start(processes)
            provider = Provider(token, args.objects, secret=args.vendor_secret)
            for concurrency in args.concurrency:
                mesh.reset()
                result = asyncio.run(rt.http_phase("intake", "post", provider, mesh.ports, concurrency,  # type: ignore[arg-type]
                                                   args.warmup, args.duration, mesh, stop))
                results.append(result)
                report("intake", result, args.objects)
        if not stop.is_set():
            output["delivery"] = delivery(mesh, receiver, side, token, stop)
            print(f"  delivery   {json.dumps(output['delivery'])}", flush=True)
    finally:
        side.close()
        receiver.close()
        mesh.stop()
    raw_phase("after")
    return results


def main() -> int:
    args = parse_args()
    stop = rt.stop_on_signals()
    rt.RESULTS.mkdir(parents=True, exist_ok=True)
    output: dict[str, Any] = {"stamp": time.strftime("%Y%m%d-%H%M%S"), "config": dict(vars(args))}
    mesh = ConnectorMesh(args)
    results: list[rt.Result] = []
    try:
        print("setting up: database, migrate, instances ...", flush=True)
        mesh.create_database()
        output["machine"] = {**rt.machine_info(mesh.dsn), "loadavg_at_start": os.getloadavg()}
        results = run(args, mesh, stop, output)
    except KeyboardInterrupt:
        stop.set()
    finally:
        mesh.close()
        if not args.keep_db:
            mesh.drop_database()
    intake = [r for r in results if r.scenario == "intake"]
    best = max(intake, key=lambda r: r.ops_per_s, default=None)
    if best:
        value = objects_per_s(best, args.objects)
        rt.goal_line(f"intake >= {GOAL_OBJECTS_PER_S} event objects/s", value, value >= GOAL_OBJECTS_PER_S,
                     " objects/s")
    output["results"] = [asdict(r) for r in results]
    return rt.save_results(output, "connector_events", output["stamp"], lambda _: None, lambda _: None)


if __name__ == "__main__":
    sys.exit(main())
