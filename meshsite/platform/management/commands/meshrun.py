"""`make run`: the whole mesh in the foreground, on whatever the settings point at.

Checks the port, migrates, seeds, then runs uvicorn (HTTP + WebSocket) and a Celery worker
with the beat scheduler embedded as child processes, and says "meshsite is running" once the
server answers. Ctrl-C (or SIGTERM) stops all of them and exits 0; if a child dies, the other
is stopped too and meshrun exits non-zero with a one-line reason, so nothing half-runs
unnoticed.
"""

from __future__ import annotations

import errno
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

# Long enough for a cold start on a slow laptop (the server imports the whole project).
STARTUP_TIMEOUT = 120.0
POLL_INTERVAL = 0.2


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]

    def exited(self) -> int | None:
        return self.process.poll()


class Stopped(Exception):
    """A child died: the one-line reason meshrun exits with."""


class Command(BaseCommand):
    help = "Migrate, seed and run uvicorn plus a Celery worker (with beat) in the foreground"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        host, port = options["host"], options["port"]
        # Before anything else: the server would otherwise log an error among the start-up
        # lines and exit, long after "running" was printed.
        problem = bind_problem(host, port)
        if problem:
            self.stderr.write(problem)
            sys.exit(2)
        self.say("Migrating the database…")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        self.say("Seeding the default subaccount…")
        call_command("meshseed")
        self.say(f"Starting the web server (uvicorn) on {host}:{port} and a Celery worker with beat…")
        signal.signal(signal.SIGTERM, _interrupt)
        children = start_children(host, port)
        reason = None
        try:
            wait_until_answering(host, port, children)
            self.say(f"meshsite is running on http://{host}:{port} (Ctrl-C stops it); "
                     f"the cockpit is at http://{host}:{port}/")
            watch(children)
        except KeyboardInterrupt:
            pass
        except Stopped as stopped:
            reason = str(stopped)
        finally:
            stop_children(children)
        if reason:
            # Last, after the other children's shutdown lines, so that it is what the user sees.
            self.stderr.write(f"meshsite stopped: {reason}")
            sys.exit(1)

    def say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def bind_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port, in one line with what to do; None if it can."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        return f"Cannot listen on {host}: {error.strerror}; pick another host with `make run HOST=127.0.0.1`"
    with socket.socket(family, kind, proto) as sock:
        # uvicorn (and Twisted under Daphne) set SO_REUSEADDR too, so a port with only
        # closing connections left is free for them, and must not be reported as taken here.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as error:
            return _bind_error(host, port, error)
    return None


def _bind_error(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return (f"Port {port} on {host} is already in use (another meshsite?); "
                f"pick another with `make run PORT={port + 1}`")
    if error.errno == errno.EACCES:
        return f"Port {port} needs root privileges; pick one above 1023 with `make run PORT=8000`"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; pick another with `make run HOST=127.0.0.1`"
    return f"Cannot listen on {host}:{port}: {error.strerror}"


def web_server_command(server: str, host: str, port: int) -> list[str]:
    """The production command line of either supported ASGI server (the live tests run both).

    uvicorn gets its fast parts by name, so that a missing extra fails at start instead of
    quietly falling back: httptools, because h11 answers a request head over 16 KiB with a
    plain-text 400 before meshsite/headerlimit.py can answer its JSON 431; uvloop; websockets.
    --no-proxy-headers: uvicorn trusts X-Forwarded-* from 127.0.0.1 by default, which would
    make a plain-HTTP request "secure" behind MESH_TRUST_X_FORWARDED_PROTO's back.
    --ws-max-size: one limit for a WebSocket message and an HTTP body (uvicorn: 16 MiB by
    default, Daphne: 1 MiB fixed): the larger of the request body limit and the JSON
    protocol's frame limit (a body at the message size limit, in base64).
    """
    if server == "daphne":
        return [_bin("daphne"), "-b", host, "-p", str(port), "meshsite.asgi:application"]
    ws_max_size = max(settings.MESH_MAX_REQUEST_BODY, settings.MESH_WS_MAX_FRAME)
    return [_bin("uvicorn"), "--host", host, "--port", str(port), "--http", "httptools", "--loop", "uvloop",
            "--ws", "websockets", "--ws-max-size", str(ws_max_size), "--no-proxy-headers",
            "meshsite.asgi:application"]


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def start_children(host: str, port: int) -> list[Child]:
    return [
        Child("the web server (uvicorn)", subprocess.Popen(web_server_command("uvicorn", host, port))),
        Child("the Celery worker", subprocess.Popen(
            [_bin("celery"), "-A", "meshsite", "worker", "--beat", "--pool=threads",
             "--concurrency=4", "--loglevel=INFO", "--schedule", str(settings.VAR_DIR / "celerybeat-schedule")])),
    ]


def check_children(children: list[Child]) -> None:
    for child in children:
        status = child.exited()
        if status is not None:
            how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
            raise Stopped(f"{child.name} {how} (its log is above); the rest was stopped")


def wait_until_answering(host: str, port: int, children: list[Child]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not answers(host, port):
        check_children(children)
        if time.monotonic() > deadline:
            raise Stopped(f"the web server did not answer on {host}:{port} within {STARTUP_TIMEOUT:.0f} s")
        time.sleep(POLL_INTERVAL)


def answers(host: str, port: int) -> bool:
    """Any HTTP answer counts: the server is listening and its application is loaded. The
    admin's login page answers 200 without a token and without logging a 404 warning."""
    probe_host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    connection = http.client.HTTPConnection(probe_host, port, timeout=5)
    try:
        connection.request("GET", "/admin/login/", headers={"Host": "127.0.0.1"})
        connection.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def watch(children: list[Child]) -> None:
    while True:
        check_children(children)
        time.sleep(0.5)


def stop_children(children: list[Child]) -> None:
    for child in children:
        if child.exited() is None:
            child.process.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
