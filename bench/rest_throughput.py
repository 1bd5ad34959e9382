#!/usr/bin/env python
"""REST throughput of meshsite on PostgreSQL, beside the raw PostgreSQL insert rate: issue
13's table in one run.

Self-contained: (re)creates a scratch database, migrates it, creates an instance and a
service key with the CLI, and for each server under test (uvicorn, Daphne) and each TLS
mode (plain HTTP; HTTPS terminated by the server itself, a self-signed certificate the
client verifies) measures, for each client concurrency (default 1 and 8) during a fixed
window:

  zero-work     any request to an ASGI app that answers 200 at once: the server's own cost
  publish       POST /messagingrest/v1/queues/{q}/messages, x-qos 1, 1 KiB octet-stream -> 204
  consume+ack   POST .../messages/consumption (x-qos 1) -> 200, then
                POST .../messages/{id}/acknowledgement -> 200   (one op = the pair)

and, before and after all of them, from the same number of connections (threads, psycopg 3):

  raw insert    durable single-row INSERT in autocommit (synchronous_commit on) into
                (id bigserial, queue_id bigint, payload bytea, created_at timestamptz)

It prints ops/s, latency p50/p99 and CPU per op, the publish / raw-insert ratios and a
verdict for each of the issue's goals. Results go to bench/results/ as JSON (gitignored).
Not a test: nothing here asserts.

    .venv/bin/python bench/rest_throughput.py                 # make bench: the whole table
    .venv/bin/python bench/rest_throughput.py --server uvicorn --tls off --servers 1 --duration 5
    .venv/bin/python bench/rest_throughput.py --breakdown --profile   # where a publish spends its time

Ctrl-C (or SIGTERM) stops it at any point; the server processes it started are stopped and
the scratch database is dropped unless --keep-db.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    QUEUE,
    RESULTS,
    ROOT,
    SERVERS,
    ZERO_APP,
    Client,
    Mesh,
    Result,
    _phase,
    find_py_spy,
    http_phase,
    machine_info,
    raw_insert,
    save_results,
    self_signed,
    start_py_spy,
    stop_on_signals,
)

# --------------------------------------------------------------------------------------
# Profiling (optional, --profile): py-spy samples one Daphne process (wall clock, idle
# included) during a publish run that is not part of the reported numbers. Each sample of
# the thread running Django's sync code is given to the innermost phase it is in, so the
# phases add up to the time a request spends there; samples of the event-loop thread are
# sorted the same way.

SYNC_PHASES = [
    # (label, regex matched against one "function (file:line)" frame), innermost wins
    ("new PostgreSQL connection (connect)", r"^BaseDatabaseWrapper\.connect "),
    ("connection health check (SELECT 1)", r"\.is_usable "),
    ("COMMIT", r"^Atomic\.__exit__ "),
    ("INSERT message (Model.save)", r"^Model\.save "),
    ("queue lookup (queue_get)", r"^queue_get "),
    ("token lookup (client_for_token)", r"^client_for_token "),
    ("rules, validation, row building", r"^message_publish_to_queue "),
    ("view: header parsing, response", r"^QueuePublishView\.post "),
    ("DRF: Request, perms, finalize", r"^APIView\.dispatch "),
    ("request_started/finished signals", r"^Signal\.send "),
    ("Django sync middleware + handler", r"django/(core/handlers|middleware|contrib)|meshsite/middleware"),
]
WAIT_LEAF = re.compile(r"^(Connection\.wait|wait_conn|wait|wait_c) \(psycopg/")
MAIN_PHASES = [
    ("idle (waiting in epoll)", r"^EpollSelector\.select "),
    ("starting a thread per request", r"^Thread\.start "),
    ("Django ASGI handler + async middleware", r"^(ASGIHandler|MiddlewareMixin\.__acall__|AsyncToSync\.main_wrap|"
                                               r"SyncToAsync\.__call__|BodyLimitMiddleware)"),
]


def analyze_profile(raw_path: Path, rate: int, requests: int) -> dict[str, Any]:
    """Attribute py-spy `--format raw --threads --idle` samples to the phases of a request."""
    sync: collections.Counter[str] = collections.Counter()
    sync_wait: collections.Counter[str] = collections.Counter()
    main: collections.Counter[str] = collections.Counter()
    other = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:]
        if any(frame.startswith("SyncToAsync.thread_handler ") for frame in frames):
            if frames[-1].startswith(("Condition.wait ", "Event.wait ")) and any(
                    frame.startswith("CurrentThreadExecutor.run_until_future ") for frame in frames[-4:]):
                label = "waiting for the event loop (async_to_sync hop)"
            else:
                label = _phase(frames, SYNC_PHASES, "asgiref sync_to_async glue")
            sync[label] += count
            if WAIT_LEAF.search(frames[-1]):
                sync_wait[label] += count
        elif thread.endswith("MainThread"):
            main[_phase(frames, MAIN_PHASES, "Twisted/Daphne HTTP + asyncio")] += count
        else:
            other += count

    def per_request(samples: int) -> float:
        return round(samples / rate / max(1, requests) * 1e6, 1)

    order = [label for label, _ in SYNC_PHASES] + ["asgiref sync_to_async glue",
                                                   "waiting for the event loop (async_to_sync hop)"]
    return {
        "requests": requests,
        "sync_thread_us_per_request": {
            label: {"total": per_request(sync[label]), "waiting_on_postgres": per_request(sync_wait[label])}
            for label in order if sync[label]
        },
        "sync_thread_total_us_per_request": per_request(sum(sync.values())),
        "event_loop_thread_us_per_request": {label: per_request(count) for label, count in main.most_common()},
        "other_threads_samples": other,
    }


async def profile_publish(args: argparse.Namespace, mesh: Mesh, client: Client, stamp: str,
                          stop: threading.Event) -> dict[str, Any]:
    py_spy = find_py_spy()
    if not py_spy:
        return {}
    mesh.start(1)
    raw_path = RESULTS / f"profile-publish-{stamp}.txt"
    svg_path = RESULTS / f"profile-publish-{stamp}.svg"
    seconds, rate = max(3, int(args.duration)), 250
    # One warm-up second outside the sampling, then py-spy runs inside the measured window.
    spies: list[subprocess.Popen] = []

    async def start_spies() -> None:
        await asyncio.sleep(1.0)
        spies.extend(start_py_spy(py_spy, mesh.pids[0], rate, raw_path, svg_path, seconds))

    spy_task = asyncio.create_task(start_spies())
    result = await http_phase("publish (profiled)", "publish", client, mesh.ports, args.profile_concurrency, 1.0,
                              seconds + 0.5, mesh, stop)
    await spy_task
    for spy in spies:
        _, err = await asyncio.to_thread(spy.communicate, timeout=60)
        if spy.returncode != 0:
            print(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
            return {}
    analysis = analyze_profile(raw_path, rate, round(result.ops_per_s * seconds))
    analysis["concurrency"] = args.profile_concurrency
    # What share of a request's time the samples account for (c=1: a request's time is 1/rate).
    # py-spy discovers threads periodically, so samples of short-lived per-request threads are
    # partly missed; low coverage means the phase split below is skewed.
    if args.profile_concurrency == 1 and result.ops_per_s:
        analysis["sync_thread_coverage_pct"] = round(
            100 * analysis["sync_thread_total_us_per_request"] * result.ops_per_s / 1e6, 1)
    analysis["run"] = asdict(result)
    analysis["files"] = {"raw": str(raw_path.relative_to(ROOT)), "flamegraph": str(svg_path.relative_to(ROOT))}
    return analysis


# --------------------------------------------------------------------------------------
# Breakdown (optional, --breakdown): deterministic timings of the parts of a publish, in a
# Django process of its own (same settings and environment as the servers), no HTTP server:
# each part is called N times and its wall and CPU time per call measured (CPU of all the
# process's threads). Sampling profilers undercount here: Django under ASGI runs each
# request's sync code in a new short-lived thread, which a sampler partly misses.

BREAKDOWN_CODE = r"""
import asyncio, json, os, time
from urllib.parse import quote
from meshsite.asgi import application  # sets Django up
from django.db import connection, transaction
from django.db.backends.signals import connection_created
from django.test import Client
from django.utils import timezone
from meshsite.platform.auth import client_for_token
from messaging.models import Message
from messaging.selectors import queue_get
from messaging.services.messages import Outgoing, message_publish_to_queue

token, name, count = os.environ["BENCH_TOKEN"], os.environ["BENCH_QUEUE"], int(os.environ["BENCH_N"])
payload = os.urandom(int(os.environ["BENCH_PAYLOAD"]))
path = "/messagingrest/v1/queues/" + quote(name, safe="") + "/messages"
opened = [0]
connection_created.connect(lambda **kw: opened.__setitem__(0, opened[0] + 1), weak=False)
results = {}

def record(label, started, cpu, before):
    results[label] = {"wall_us": round((time.perf_counter() - started) / count * 1e6, 1),
                      "cpu_us": round((time.process_time() - cpu) / count * 1e6, 1),
                      "connection_opens_per_call": round((opened[0] - before) / count, 2)}

def measure(label, fn):
    for _ in range(min(20, count)):
        fn()
    before, started, cpu = opened[0], time.perf_counter(), time.process_time()
    for _ in range(count):
        fn()
    record(label, started, cpu, before)

instance = client_for_token(token).instance
queue = queue_get(instance=instance, name=name)
outgoing = Outgoing(payload=payload, content_type="application/octet-stream", qos=1)

def insert_commit():
    now = timezone.now()
    with transaction.atomic():
        Message(queue=queue, payload=payload, size=len(payload), content_type=outgoing.content_type,
                address="queue:" + name, qos=1, created_at=now, expires_at=now).save(force_insert=True)

def raw_insert():
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_raw_insert (queue_id, payload, created_at) VALUES (1, %s, now())", [payload])

def select_1():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")

measure("SELECT 1 (Django cursor, autocommit)", select_1)
measure("raw INSERT (Django cursor, autocommit)", raw_insert)
measure("token lookup (client_for_token)", lambda: client_for_token(token))
measure("queue lookup (queue_get)", lambda: queue_get(instance=instance, name=name))
measure("INSERT + COMMIT (Message.save in atomic)", insert_commit)
measure("service: message_publish_to_queue", lambda: message_publish_to_queue(
    instance=instance, queue_name=name, outgoing=outgoing))

client = Client()
headers = {"Authorization": "Bearer " + token, "x-qos": "1"}
def sync_request():
    response = client.post(path, data=payload, content_type="application/octet-stream", headers=headers,
                           REQUEST_URI=path)
    assert response.status_code == 204, response.status_code
measure("request: Django sync handler (test Client)", sync_request)
connection.close()

scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
         "path": "/messagingrest/v1/queues/" + name + "/messages", "raw_path": path.encode(), "query_string": b"",
         "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
         "headers": [(b"host", b"127.0.0.1"), (b"authorization", ("Bearer " + token).encode()), (b"x-qos", b"1"),
                     (b"content-type", b"application/octet-stream"), (b"content-length", str(len(payload)).encode())]}

async def asgi_request():
    sent, calls = [], [0]
    async def receive():
        calls[0] += 1
        if calls[0] == 1:
            return {"type": "http.request", "body": payload, "more_body": False}
        await asyncio.Future()  # no disconnect while the request runs
    async def send(message):
        sent.append(message)
    await application(dict(scope), receive, send)
    assert sent[0]["status"] == 204, sent[0]

async def asgi_requests():
    for _ in range(min(20, count)):
        await asgi_request()
    before, started, cpu = opened[0], time.perf_counter(), time.process_time()
    for _ in range(count):
        await asgi_request()
    record("request: Django ASGI handler (meshsite.asgi, no server)", started, cpu, before)

asyncio.run(asgi_requests())
print(json.dumps(results))
"""


def breakdown(args: argparse.Namespace, mesh: Mesh, token: str) -> dict[str, Any]:
    env = mesh.env(server=True)
    env.update(BENCH_TOKEN=token, BENCH_QUEUE=QUEUE, BENCH_N=str(args.breakdown_n), BENCH_PAYLOAD=str(args.payload))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", BREAKDOWN_CODE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        print(f"--breakdown failed:\n{done.stderr[-3000:]}")
        return {}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def print_breakdown(parts: dict[str, Any]) -> None:
    print("\nbreakdown of a publish (no HTTP server; per call):")
    print(f"  {'part':<58} {'wall µs':>8} {'cpu µs':>8} {'conn opens':>10}")
    for label, value in parts.items():
        opens = value["connection_opens_per_call"]
        print(f"  {label:<58} {value['wall_us']:>8.0f} {value['cpu_us']:>8.0f} {opens:>10}")


def print_table(results: list[Result], raw: dict[int, float]) -> None:
    header = (f"{'scenario':<12} {'server':<7} {'tls':<3} {'conc':>4} {'procs':>5} {'ops/s':>8} {'p50 ms':>7} "
              f"{'p99 ms':>7} {'x raw':>5} {'srv µs/op':>9} {'pg µs/op':>8} {'cli µs/op':>9} {'tx/op':>5} "
              f"{'conn/op':>7} {'sess':>4} {'cpu%':>5} {'other%':>6} {'err':>4}")
    print(header)
    print("-" * len(header))
    for r in results:
        n = r.notes
        ratio = f"{r.ops_per_s / raw[r.concurrency]:.2f}" if r.scenario == "publish" and raw.get(r.concurrency) else ""
        server = n.get("server_us_per_op") if r.servers else ""
        print(f"{r.scenario:<12} {n.get('server', '-'):<7} {n.get('tls', '-'):<3} {r.concurrency:>4} "
              f"{r.servers or '-':>5} {r.ops_per_s:>8.1f} {r.p50_ms:>7.2f} "
              f"{r.p99_ms:>7.2f} {ratio:>5} {server:>9} {n.get('postgres_us_per_op', ''):>8} "
              f"{n.get('client_us_per_op', ''):>9} {n.get('db_transactions_per_op', ''):>5} "
              f"{n.get('db_sessions_per_op', ''):>7} {n.get('peak_db_sessions', ''):>4} "
              f"{n.get('machine_busy_pct', ''):>5} {n.get('other_processes_pct', ''):>6} {r.errors:>4}")
    print("srv/pg/cli µs/op: CPU of the server processes / of all PostgreSQL processes / of this client per op;\n"
          "tx/op, conn/op: transactions and new sessions in the scratch database per op; sess: peak open sessions\n"
          "on it; cpu%: machine busy; other%: CPU of other processes (disturbance)")


def verdicts(results: list[Result], raw: dict[int, float]) -> list[dict[str, Any]]:
    """Issue 13's goals, each against the numbers of this run (best over process counts)."""

    def best(scenario: str, server: str, tls: str, concurrency: int) -> Result | None:
        found = [r for r in results if r.scenario == scenario and r.notes.get("server") == server
                 and r.notes.get("tls") == tls and r.concurrency == concurrency]
        return max(found, key=lambda r: r.ops_per_s, default=None)

    goals: list[dict[str, Any]] = []

    def goal(name: str, measured: float | None, target: float, met: bool | None, detail: str) -> None:
        goals.append({"goal": name, "measured": measured, "target": target, "met": met, "detail": detail})

    for tls in sorted({str(r.notes.get("tls")) for r in results if r.notes.get("tls")}):
        for concurrency, target in ((8, 0.5), (1, 0.3)):
            run = best("publish", "uvicorn", tls, concurrency)
            if run and raw.get(concurrency):
                ratio = run.ops_per_s / raw[concurrency]
                goal(f"publish uvicorn c={concurrency} tls={tls} >= {target}x raw", round(ratio, 3), target,
                     ratio >= target, f"{run.ops_per_s:.0f}/s against {raw[concurrency]:.0f} raw inserts/s")
        run = best("publish", "uvicorn", tls, 8)
        if run:
            goal(f"publish uvicorn c=8 tls={tls} p99 <= 10 ms", run.p99_ms, 10.0, run.p99_ms <= 10.0,
                 f"p50 {run.p50_ms:.2f} ms")
        run, zero = best("publish", "daphne", tls, 8), best("zero-work", "daphne", tls, 8)
        if run and zero and zero.ops_per_s:
            ratio = run.ops_per_s / zero.ops_per_s
            goal(f"publish daphne c=8 tls={tls} >= 0.5x daphne zero-work", round(ratio, 3), 0.5, ratio >= 0.5,
                 f"{run.ops_per_s:.0f}/s against {zero.ops_per_s:.0f} zero-work requests/s")
        for server in ("uvicorn", "daphne"):
            run = best("consume+ack", server, tls, 8)
            if run:
                goal(f"consume+ack {server} c=8 tls={tls} >= 1500 ops/s", run.ops_per_s, 1500.0,
                     run.ops_per_s >= 1500, f"p99 {run.p99_ms:.2f} ms")
    return goals


def print_profile(profile: dict[str, Any]) -> None:
    print(f"\nprofile: one Daphne, publish c={profile['concurrency']}, {profile['run']['ops_per_s']} ops/s under "
          f"py-spy; wall µs per request in the thread running Django's sync code (innermost phase wins):")
    for label, value in profile["sync_thread_us_per_request"].items():
        print(f"  {label:<50} {value['total']:>8.1f}   of which waiting on PostgreSQL "
              f"{value['waiting_on_postgres']:>7.1f}")
    print(f"  {'total':<50} {profile['sync_thread_total_us_per_request']:>8.1f}"
          + (f"   (samples cover {profile['sync_thread_coverage_pct']}% of the request time: py-spy misses "
             "parts of short-lived threads)" if "sync_thread_coverage_pct" in profile else ""))
    print("event-loop thread, µs per request:")
    for label, value in profile["event_loop_thread_us_per_request"].items():
        print(f"  {label:<50} {value:>8.1f}")
    print(f"files: {profile['files']['flamegraph']}, {profile['files']['raw']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each (default 1)")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8],
                        help="comma-separated client counts (default 1,8)")
    parser.add_argument("--servers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                        help="comma-separated server process counts to try, one port each (default 1,2)")
    parser.add_argument("--payload", type=int, default=1024, help="message size in bytes (default 1024)")
    parser.add_argument("--port", type=int, default=8710, help="first server port (default 8710)")
    parser.add_argument("--server", type=lambda s: s.split(","), default=["uvicorn", "daphne"],
                        help="comma-separated servers under test (default uvicorn,daphne)")
    parser.add_argument("--tls", type=lambda s: s.split(","), default=["off", "on"],
                        help="comma-separated: off (plain HTTP), on (the server terminates TLS with a self-signed "
                             "certificate; the client verifies it) (default off,on)")
    parser.add_argument("--access-log", action="store_true",
                        help="keep Daphne's default per-request access log (default: daphne -v 0)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one Daphne under publish with py-spy (needs py-spy in the venv)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the parts of a publish in-process (token lookup, queue lookup, insert, "
                             "Django sync vs ASGI handler)")
    parser.add_argument("--breakdown-n", type=int, default=300, help="calls per part for --breakdown (default 300)")
    parser.add_argument("--profile-concurrency", type=int, default=1, help="clients while profiling (default 1)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the Daphne processes (what-if runs), repeatable")
    parser.add_argument("--db-url-query", default="",
                        help="query string appended to the servers' DATABASE_URL, e.g. 'pool=true' (what-if runs)")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--db-name", default="meshsite_bench", help="scratch database, dropped and recreated")
    parser.add_argument("--keep-db", action="store_true", help="leave the scratch database at the end")
    args = parser.parse_args()
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", args.db_name):
        parser.error("--db-name must be a plain lower-case identifier")
    if set(args.server) - set(SERVERS) or set(args.tls) - {"off", "on"}:
        parser.error(f"--server takes {', '.join(SERVERS)}; --tls takes off, on")
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes NAME=VALUE")

    stop = stop_on_signals()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    payload = os.urandom(args.payload)
    mesh = Mesh(args)
    results: list[Result] = []
    output: dict[str, Any] = {}
    try:
        print("setting up: database, migrate, instance, key ...", flush=True)
        mesh.create_database()
        output["machine"] = machine_info(mesh.dsn)
        m = output["machine"]
        print(f"machine: {m['nproc']} cpus, {m['cpu_model']}, {m['memory']}; {m['postgresql'].split(',')[0]}; "
              f"synchronous_commit={m['postgresql_settings'].get('synchronous_commit')}; code at {m['commit']}"
              + (f" + uncommitted changes in {', '.join(m['uncommitted_changes_outside_bench'])}"
                 if m["uncommitted_changes_outside_bench"] else ""), flush=True)
        output["config"] = dict(vars(args))
        output["machine"]["loadavg_at_start"] = os.getloadavg()

        raw: dict[int, list[Result]] = collections.defaultdict(list)

        def run_raw(label: str) -> None:
            for concurrency in args.concurrency:
                result = raw_insert(mesh.dsn, concurrency, args.warmup, args.duration, payload, stop)
                result.notes["when"] = label
                raw[concurrency].append(result)
                results.append(result)
                print(f"  raw insert     c={concurrency}: {result.ops_per_s:8.1f} ops/s  ({label})", flush=True)

        def run_phase(scenario: str, op: str, client: Client, concurrency: int, server: str, tls: str) -> None:
            result = asyncio.run(http_phase(scenario, op, client, mesh.ports, concurrency, args.warmup,
                                            args.duration, mesh, stop))
            result.notes.update(server=server, tls=tls)
            results.append(result)
            print(f"  {scenario:<13} {server:<7} tls={tls:<3} c={concurrency} procs={len(mesh.ports)}: "
                  f"{result.ops_per_s:8.1f} ops/s  p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  "
                  f"errors {result.errors}" + (f"  {result.notes['failures']}" if "failures" in result.notes else ""),
                  flush=True)

        run_raw("before")
        token = ""
        tls_files = self_signed(mesh.var_dir)
        for server in args.server:
            for tls in args.tls:
                if stop.is_set():
                    break
                mesh.server, mesh.tls = server, tls_files if tls == "on" else None
                # The server's own cost per request, in this run: what Daphne's goal is taken against.
                mesh.start(1, app=ZERO_APP)
                for concurrency in args.concurrency:
                    run_phase("zero-work", "zero", Client("-", payload), concurrency, server, tls)
                for processes in args.servers:
                    mesh.start(processes)
                    if not token:
                        token = mesh.token()
                        mesh.create_queue(token)
                    client = Client(token, payload)
                    mesh.reset_messages()
                    for concurrency in args.concurrency:
                        for scenario, op in (("publish", "publish"), ("consume+ack", "consume_ack")):
                            run_phase(scenario, op, client, concurrency, server, tls)
                mesh.stop()
        mesh.server, mesh.tls = args.server[0], None
        run_raw("after")

        if args.breakdown and not stop.is_set():
            print("timing the parts of a publish in-process ...", flush=True)
            mesh.reset_messages()
            output["breakdown"] = breakdown(args, mesh, token)

        if args.profile and not stop.is_set():
            print("profiling publish under py-spy (not part of the numbers above) ...", flush=True)
            mesh.reset_messages()
            output["profile"] = asyncio.run(profile_publish(args, mesh, Client(token, payload), stamp, stop))
            mesh.stop()
    except KeyboardInterrupt:
        stop.set()
        print("\ninterrupted; stopping", flush=True)
    finally:
        mesh.close()
        if not args.keep_db:
            try:
                mesh.drop_database()
            except psycopg.Error as error:
                print(f"could not drop {args.db_name}: {error}")

    if not results:
        return 1
    # The ratio is taken against the better of the two raw runs at that concurrency (conservative).
    raw_best = {c: max(r.ops_per_s for r in runs) for c, runs in raw.items()}
    print()
    print_table(results, raw_best)
    disturbed = [r for r in results if r.notes.get("other_processes_pct", 0) > 10]
    if disturbed:
        worst = max(r.notes["other_processes_pct"] for r in disturbed)
        print(f"WARNING: other processes used up to {worst}% of the machine's CPU during {len(disturbed)} of "
              f"{len(results)} measurements; those numbers are disturbed")
    summary = verdicts(results, raw_best)
    print("\ngoals (issue 13), best over process counts:")
    for item in summary:
        print(f"  {'met    ' if item['met'] else 'NOT met'}  {item['goal']:<52} {item['measured']}  ({item['detail']})")
    output["results"] = [asdict(r) for r in results]
    output["summary"] = summary
    return save_results(output, "rest_throughput", stamp, print_breakdown, print_profile)


if __name__ == "__main__":
    sys.exit(main())
