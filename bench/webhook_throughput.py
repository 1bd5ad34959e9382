#!/usr/bin/env python
"""Webhook push delivery: deliveries/s from ONE Celery worker process, and publish -> webhook
latency at a steady publish rate, beside the floors measured in the same run.

On the harness (bench/harness.py: scratch database, CLI-made instance and key, the server
under test, a recording receiver process, one worker `celery worker --pool=threads
--concurrency=4` and beat with MESH_SWEEP_INTERVAL=1, CPU per role, py-spy, results file):

  A  throughput  --messages (5,000 x 1 KiB) pre-loaded into paused subscriptions' queues
                 (not timed); resumed through the API; the clock stops when the last push
                 arrives. For each count in --subscriptions (1,4), --repeat times: the spread.
  B  latency     open-loop publishes through REST (--rates 20,50/s, 1 s warm-up + 10 s) into
                 one subscribed queue: publish request sent -> receiver arrival, p50/p99
                 (CLOCK_MONOTONIC of the same machine on both ends), plus a control run into
                 a queue without a webhook.
  floors         a raw durable single-row INSERT, the raw SQL of a delivery (claim a round of
                 50 in one UPDATE ... RETURNING, then DELETE it, synchronous_commit off as the
                 engine does), and a plain http.client POST over a kept-alive connection.

    .venv/bin/python bench/webhook_throughput.py                       # uvicorn, ~4 minutes
    .venv/bin/python bench/webhook_throughput.py --skip-b --subscriptions 1 --repeat 5
    .venv/bin/python bench/webhook_throughput.py --profile             # py-spy on the worker

Not a test: nothing here asserts. Ctrl-C stops every process it started; the scratch
database is dropped unless --keep-db. Results: bench/results/webhook_throughput-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as rt  # noqa: E402

PLAIN_QUEUE = f"{rt.NAMESPACE}/plain"  # no webhook: the control for publish latency
PRELOAD = """
import json, os
from datetime import timedelta
from django.utils import timezone
from messaging.models import Message, Queue
pad, now = os.urandom(max(0, {size} - 12)), timezone.now()
for name, (start, count) in json.loads('{plan}').items():
    queue = Queue.objects.get(name=name)
    Message.objects.bulk_create([
        Message(queue=queue, payload=b"%012d" % (start + i) + pad, size=12 + len(pad), qos=1,
                content_type="application/octet-stream", address="queue:" + name,
                created_at=now, expires_at=now + timedelta(days=1)) for i in range(count)], batch_size=1000)
"""


def queue_name(index: int) -> str:
    return f"{rt.NAMESPACE}/q{index}"


def hook_name(index: int) -> str:
    return f"{rt.NAMESPACE}/hook{index}"


class HookMesh(rt.Mesh):
    """The harness's Mesh plus the receiver, the worker and beat, and the API calls made."""

    def env(self, port: int | None = None, server: bool = False) -> dict[str, str]:
        env = super().env(port, server=True)  # --env reaches every process
        # Resume is scenario A's starting gun; the slow start would measure its ramp.
        env.update(REDIS_URL=self.args.redis_url, MESH_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8",
                   MESH_SWEEP_INTERVAL=str(self.args.sweep_interval), MESH_WEBHOOK_RESUME_RATE="0")
        return env

    def start_side(self, token: str, hooks: int) -> None:
        self.side = rt.SideProcesses(self.var_dir)
        self.receiver = rt.Receiver(self.side, self.args.receiver_port)
        self.api = httpx.Client(base_url=f"http://{rt.HOST}:{self.ports[0]}",
                                headers={"Authorization": f"Bearer {token}"}, timeout=30)
        self.call("PUT", f"{rt.MANAGEMENT}/queues/{rt.enc(PLAIN_QUEUE)}")
        for index in range(hooks):
            self.call("PUT", f"{rt.MANAGEMENT}/queues/{rt.enc(queue_name(index))}")
            self.call("POST", f"{rt.REST}/subscriptions", json={
                "name": hook_name(index), "address": f"queue:{queue_name(index)}", "qos": 1,
                "pushConfig": {"type": "webhook", "endpoint": self.receiver.url(f"/hook/{index}"),
                               "exemptHandshake": True}})
            self.set_state(index, "pause")
        rt.start_celery_worker(self.side, self.env(), self.args.redis_url, self.args.concurrency,
                               beat=not self.args.no_beat)

    def snap(self) -> rt.RoleSnapshot:
        return rt.take_roles({"server": self.pids, **self.side.pids()}, self.dsn)

    def close(self) -> None:
        if hasattr(self, "side"):
            self.side.close()
            self.receiver.close()
            self.api.close()
        super().close()

    def call(self, method: str, path: str, **kwargs: Any) -> None:
        response = self.api.request(method, path, **kwargs)
        if response.status_code not in (200, 201):
            raise SystemExit(f"{method} {path} answered {response.status_code}: {response.text[:500]}")

    def set_state(self, index: int, action: str) -> None:
        self.call("PUT", f"{rt.REST}/subscriptions/{rt.enc(hook_name(index))}/state", json={"action": action})

    def preload(self, plan: dict[str, tuple[int, int]]) -> None:
        """Messages into paused queues (not timed), then ANALYZE: a run must not depend on
        whether autovacuum has looked at the table yet."""
        self.manage("shell", "-c", PRELOAD.format(plan=json.dumps(plan), size=self.args.payload))
        self.sql("ANALYZE messaging_message")

    def sql(self, statement: str) -> Any:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(statement)  # type: ignore[call-overload]
            return cursor.fetchone() if cursor.description else None

    def queued(self) -> int:
        return int(self.sql("SELECT count(*) FROM messaging_message")[0])


def scenario_a(mesh: HookMesh, subscriptions: int, seq: int, stop: threading.Event) -> dict[str, Any]:
    """Drain a pre-loaded backlog: deliveries/s from resume to the last arrival."""
    messages = mesh.args.messages
    share = [messages // subscriptions + (index < messages % subscriptions) for index in range(subscriptions)]
    mesh.preload({queue_name(i): (seq + sum(share[:i]), share[i]) for i in range(subscriptions)})
    mesh.receiver.reset()
    before, started = mesh.snap(), time.monotonic()
    for index in range(subscriptions):
        mesh.set_state(index, "resume")
    while not stop.is_set() and time.monotonic() < started + mesh.args.a_timeout and mesh.receiver.count() < messages:
        stop.wait(0.05)
    after = mesh.snap()
    for index in range(subscriptions):
        mesh.set_state(index, "pause")
    arrivals = mesh.receiver.arrivals()
    times = sorted(row[0] for row in arrivals)
    delivered = len(times)
    seconds = (times[-1] - started) if delivered >= messages else time.monotonic() - started
    lo, hi = int(0.1 * (delivered - 1)), int(0.9 * (delivered - 1))
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    deadline = time.monotonic() + 10  # the last round's settle commits just after its pushes
    while mesh.queued() and time.monotonic() < deadline:
        time.sleep(0.1)
    return {"subscriptions": subscriptions, "delivered": delivered,
            "duplicates": delivered - len({row[2] for row in arrivals}),
            "deliveries_per_s": round(delivered / seconds, 1),
            "steady_per_s": round((hi - lo) / (times[hi] - times[lo]), 1) if delivered > 10 else 0.0,
            "gap_p50_ms": rt.ms(gaps, 0.5), "gap_p99_ms": rt.ms(gaps, 0.99), "left_in_queues": mesh.queued(),
            **rt.cpu_per_op(before, after, delivered)}


def scenario_b(mesh: HookMesh, token: str, rate: int, seq: int, stop: threading.Event,
               queue: str = queue_name(0)) -> dict[str, Any]:
    """A steady publish rate through REST; publish and publish -> receiver latencies."""
    args = mesh.args
    mesh.receiver.reset()
    pad = os.urandom(max(0, args.payload - rt.SEQ_DIGITS))
    headers = {"Authorization": f"Bearer {token}", "x-qos": "1", "Content-Type": "application/octet-stream"}
    snaps: list[rt.RoleSnapshot] = []
    record, errors = asyncio.run(rt.open_loop_post(
        mesh.ports[0], f"{rt.REST}/queues/{rt.enc(queue)}/messages", headers, rate, args.warmup, args.duration,
        lambda i: b"%012d" % (seq + i) + pad, stop, on_measure=lambda: snaps.append(mesh.snap())))
    if errors:
        print(f"    publish errors: {dict(errors.most_common(3))}")
    measured = {seq + i: row for i, row in record.items() if row[2]}
    publish = [answered - sent for sent, answered, _ in measured.values()]
    result = {"rate": rate, "published": len(measured), "publish_p50_ms": rt.ms(publish, 0.5),
              "publish_p99_ms": rt.ms(publish, 0.99), **rt.cpu_per_op(snaps[0], snaps[-1], len(measured))}
    if queue == PLAIN_QUEUE:  # the control: no webhook
        mesh.sql(f"DELETE FROM messaging_message WHERE address = 'queue:{PLAIN_QUEUE}'")
        return result
    deadline = time.monotonic() + args.drain
    while not stop.is_set() and time.monotonic() < deadline and mesh.receiver.count() < len(record):
        stop.wait(0.1)
    first: dict[int, float] = {}
    for arrived, _path, _id, number in mesh.receiver.arrivals():
        first.setdefault(int(number), arrived)
    e2e = [first[number] - sent for number, (sent, _, _) in measured.items() if number in first]
    after_answer = [first[number] - answered for number, (_, answered, _) in measured.items() if number in first]
    return {**result, "after_answer_p50_ms": rt.ms(after_answer, 0.5), "delivered": len(e2e),
            "stranded": sum(1 for i in record if seq + i not in first),
            "e2e_p50_ms": rt.ms(e2e, 0.5), "e2e_p90_ms": rt.ms(e2e, 0.9), "e2e_p99_ms": rt.ms(e2e, 0.99),
            "e2e_max_ms": rt.ms(e2e, 1.0)}


def floors(mesh: HookMesh, stop: threading.Event) -> dict[str, Any]:
    """What a delivery's SQL and its HTTP POST cost raw, in this process without Django."""
    payload, n = b"x" * mesh.args.payload, mesh.args.floor_n
    insert = rt.raw_insert(mesh.dsn, 1, 0.5, 3.0, payload, stop)
    mesh.preload({queue_name(0): (0, n)})
    queue_id = mesh.sql(f"SELECT id FROM messaging_queue WHERE name = '{queue_name(0)}'")[0]
    done, began = 0, time.perf_counter()
    with psycopg.connect(mesh.dsn, autocommit=True) as conn:
        while rows := _claim_and_delete(conn, queue_id):
            done += rows
    per_delivery_sql = (time.perf_counter() - began) / max(1, done)
    plain = http.client.HTTPConnection(rt.HOST, mesh.args.receiver_port)
    began = time.perf_counter()
    for _ in range(n):
        plain.request("POST", "/hook/floor", body=payload, headers={"x-message-id": "floor"})
        plain.getresponse().read()
    per_post = (time.perf_counter() - began) / n
    plain.close()
    mesh.receiver.reset()
    return {"raw_insert_per_s": insert.ops_per_s, "raw_insert_p50_ms": insert.p50_ms,
            "delivery_sql_us": round(per_delivery_sql * 1e6, 1), "kept_alive_post_us": round(per_post * 1e6, 1),
            "floor_deliveries_per_s": round(1 / (per_delivery_sql + per_post), 1)}


def _claim_and_delete(conn: psycopg.Connection, queue_id: int) -> int:
    m = "messaging_message"
    with conn.transaction():
        conn.execute("SET LOCAL synchronous_commit TO OFF")
        rows = conn.execute(
            f"UPDATE {m} SET locked_until = now() + interval '45 seconds',"  # noqa: S608
            " available_at = now() + interval '45 seconds', claim_id = gen_random_uuid(),"
            f" claimed_by = 'floor', delivery_count = delivery_count + 1 WHERE id IN (SELECT id FROM {m}"
            " WHERE queue_id = %s AND (available_at IS NULL OR available_at <= now()) ORDER BY id LIMIT 50"
            " FOR UPDATE SKIP LOCKED) RETURNING claim_id", [queue_id]).fetchall()
    if rows:
        with conn.transaction():
            conn.execute("SET LOCAL synchronous_commit TO OFF")
            conn.execute(f"DELETE FROM {m} WHERE claim_id = ANY(%s)", [[row[0] for row in rows]])  # noqa: S608
    return len(rows)


ENGINE_PHASES = [  # innermost frame matching wins
    ("push: connect + name check", r"^(connect|create_connection|resolve_public|parse_url) "),
    ("push: request + response", r"^(Session\.request|Session\._exchange) "),
    ("push: headers, signing, auth", r"^push "),
    ("claim round", r"^_claim "),
    ("settle round", r"^(_settle|_Run\._settle_round) "),
    ("run start and end", r"^(_runnable|_take_runnable|_take_lease|_Run\.end|_has_available|_Run\._still_held) "),
    ("run loop", r"^(webhook_deliver_batch|_Run\.\w+) "),
]
IDLE = re.compile(r"^(Condition\.wait|Event\.wait|_worker|_epoll\.poll|poll|select|sleep|Queue\.get|wait) ")


def profile_worker(mesh: HookMesh, seq: int, stop: threading.Event, stamp: str) -> dict[str, Any]:
    """py-spy on the worker (all threads) during one extra scenario-A run."""
    py_spy = rt.find_py_spy()
    if not py_spy:
        return {}
    raw, svg = rt.RESULTS / f"profile-webhook-worker-{stamp}.txt", rt.RESULTS / f"profile-webhook-worker-{stamp}.svg"
    spies = rt.start_py_spy(py_spy, mesh.side.running["worker"].pid, 250, raw, svg)
    try:
        time.sleep(1.0)  # py-spy attaches
        run = scenario_a(mesh, 1, seq, stop)
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for spy in spies:
            spy.wait(timeout=60)
    if not raw.exists():
        return {"error": "py-spy wrote no profile (it needs ptrace permission)"}
    phases = rt.profile_phases(raw, ENGINE_PHASES, IDLE, "", 250, run["delivered"])
    return {"run": run, **phases, "files": [str(raw.relative_to(rt.ROOT)), str(svg.relative_to(rt.ROOT))]}


def parse_args() -> argparse.Namespace:
    ints = lambda text: [int(x) for x in text.split(",")]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--messages", type=int, default=5000, help="scenario A backlog (5000)")
    add("--subscriptions", type=ints, default=[1, 4], help="scenario A subscription counts (1,4)")
    add("--repeat", type=int, default=1, help="scenario A runs per count, for the spread (1)")
    add("--a-timeout", type=float, default=240.0, help="scenario A gives up after (240 s)")
    add("--rates", type=ints, default=[20, 50], help="scenario B publish rates per second (20,50)")
    add("--duration", type=float, default=10.0, help="scenario B measured seconds per rate (10)")
    add("--warmup", type=float, default=1.0, help="scenario B unmeasured seconds first (1)")
    add("--drain", type=float, default=60.0, help="scenario B waits at most this for the last pushes (60 s)")
    add("--control-rate", type=int, default=20, help="B's control rate into a queue without webhook (0: off)")
    add("--skip-a", action="store_true")
    add("--skip-b", action="store_true")
    add("--skip-floors", action="store_true")
    add("--floor-n", type=int, default=2000, help="messages / POSTs for the floors (2000)")
    add("--payload", type=int, default=1024, help="message size in bytes (1024)")
    add("--concurrency", type=int, default=4, help="worker threads (4)")
    add("--no-beat", action="store_true", help="no celery beat: only wake-ups start deliveries")
    add("--sweep-interval", type=int, default=1, help="MESH_SWEEP_INTERVAL for beat (1)")
    add("--server", choices=rt.SERVERS, default="uvicorn", help="the server publishes go through (uvicorn)")
    add("--redis-url", default="redis://127.0.0.1:6379/11", help="broker (db 11: not the test suite's)")
    add("--profile", action="store_true", help="also sample the worker with py-spy in one extra A run")
    add("--env", dest="server_env", action="append", default=[], metavar="NAME=VALUE",
        help="extra environment for the server, the worker and beat (what-if runs)")
    add("--db-url-query", default="", help="query string appended to DATABASE_URL (what-if runs)")
    add("--port", type=int, default=8760, help="server port (8760)")
    add("--receiver-port", type=int, default=8790, help="receiver port (8790)")
    add("--pg-host", default="127.0.0.1")
    add("--pg-port", type=int, default=5432)
    add("--pg-user", default="postgres")
    add("--db-name", default="meshsite_bench_hooks", help="scratch database, dropped and recreated")
    add("--keep-db", action="store_true")
    args = parser.parse_args()
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", args.db_name) or any("=" not in item for item in args.server_env):
        parser.error("--db-name must be a lower-case identifier, --env NAME=VALUE")
    return args


def measure(mesh: HookMesh, token: str, output: dict[str, Any], stop: threading.Event, stamp: str) -> None:
    args, seq = mesh.args, 0
    for subscriptions in [] if args.skip_a else args.subscriptions:
        for attempt in range(args.repeat):
            if stop.is_set():
                return
            run = scenario_a(mesh, subscriptions, seq, stop)
            seq += args.messages
            output["throughput"].append(run)
            print(f"A {subscriptions} sub(s) #{attempt + 1}: {run['deliveries_per_s']:.0f}/s (steady"
                  f" {run['steady_per_s']:.0f}), {run['delivered']} arrived, {run['duplicates']} twice; worker"
                  f" {run['worker_us_per_op']} µs/d ({run['worker_cpu_pct']}% of a core), pg"
                  f" {run['postgres_us_per_op']} µs/d, gap p50/p99 {run['gap_p50_ms']}/{run['gap_p99_ms']} ms,"
                  f" other {run['other_processes_pct']}%", flush=True)
    if not args.skip_b:
        mesh.set_state(0, "resume")
        for rate in args.rates:
            if not stop.is_set():
                result = scenario_b(mesh, token, rate, seq, stop)
                seq += int(rate * (args.warmup + args.duration)) + 1
                output["latency"].append(result)
                print(f"B {rate}/s: e2e p50 {result['e2e_p50_ms']} ms, p99 {result['e2e_p99_ms']} ms; publish p50"
                      f" {result['publish_p50_ms']} ms; {result['stranded']} stranded; worker"
                      f" {result['worker_us_per_op']} µs/d, other {result['other_processes_pct']}%", flush=True)
        mesh.set_state(0, "pause")
        if args.control_rate and not stop.is_set():
            output["control"] = scenario_b(mesh, token, args.control_rate, seq, stop, PLAIN_QUEUE)
            seq += int(args.control_rate * (args.warmup + args.duration)) + 1
            print(f"control {args.control_rate}/s, no webhook: publish p50 {output['control']['publish_p50_ms']} ms")
    if args.profile and not stop.is_set():
        output["profile"] = profile_worker(mesh, seq, stop, stamp)
    if not args.skip_floors and not stop.is_set():
        output["floors"] = floors(mesh, stop)
        print(f"floors: {output['floors']}")


def summary(output: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for count in sorted({run["subscriptions"] for run in output["throughput"]}):
        rates = [run["deliveries_per_s"] for run in output["throughput"] if run["subscriptions"] == count]
        result[f"deliveries_per_s_{count}_subscriptions"] = rt.spread(rates)
    for run in output["latency"]:
        result[f"e2e_p50_ms_at_{run['rate']}"] = run["e2e_p50_ms"]
    one, p50 = result.get("deliveries_per_s_1_subscriptions", {}).get("median"), result.get("e2e_p50_ms_at_50")
    rt.goal_line(">= 2,000 deliveries/s, one subscription (median)", one, one is not None and one >= 2000, "/s")
    rt.goal_line("p50 <= 10 ms at 50/s", p50, p50 is not None and p50 <= 10, " ms")
    rt.warn_if_disturbed([r["other_processes_pct"] for r in output["throughput"] + output["latency"]])
    return result


def main() -> int:
    args = parse_args()
    stop = rt.stop_on_signals()
    rt.RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    mesh = HookMesh(args)
    output: dict[str, Any] = {"config": vars(args), "throughput": [], "latency": []}
    worker_log = ""
    try:
        print("setting up: database, migrate, instance, key, server, receiver, worker ...", flush=True)
        mesh.create_database()
        output["machine"] = {**rt.machine_info(mesh.dsn), "loadavg_at_start": os.getloadavg()}
        mesh.start(1)
        token = mesh.token()
        mesh.start_side(token, max([1, *([] if args.skip_a else args.subscriptions)]))
        measure(mesh, token, output, stop, stamp)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping", flush=True)
    finally:
        if hasattr(mesh, "side"):
            worker_log = mesh.side.log_tail("worker")
        mesh.close()
        if not args.keep_db:
            mesh.drop_database()
    if re.search(r"(ERROR|WARNING|CRITICAL)/|Traceback", worker_log):
        output["worker_log_tail"] = worker_log
        print("the worker logged warnings or errors (tail kept in the JSON)")
    output["summary"] = summary(output)
    return rt.save_results(output, "webhook_throughput", stamp, print, lambda p: print(json.dumps(p, indent=1)))


if __name__ == "__main__":
    sys.exit(main())
