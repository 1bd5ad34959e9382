"""`make run`: the whole mesh in the foreground, on whatever the settings point at.

Checks the port, migrates, seeds, then runs Daphne (HTTP + WebSocket) and a Celery worker
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

# Long enough for a cold start on a slow laptop (Daphne imports the whole project).
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
    help = "Migrate, seed and run Daphne plus a Celery worker (with beat) in the foreground"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        host, port = options["host"], options["port"]
        # Before anything else: Daphne would otherwise log a CRITICAL among the start-up
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
        self.say(f"Starting the web server (Daphne) on {host}:{port} and a Celery worker with beat…")
        signal.signal(signal.SIGTERM, _interrupt)
        children = start_children(host, port)
        reason = None
        try:
            wait_until_answering(host, port, children)
            self.say(f"meshsite is running on http://{host}:{port} (Ctrl-C stops it)")
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
    """Why Daphne could not listen on host:port, in one line with what to do; None if it can."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        return f"Cannot listen on {host}: {error.strerror}; pick another host with `make run HOST=127.0.0.1`"
    with socket.socket(family, kind, proto) as sock:
        # Twisted (Daphne) sets SO_REUSEADDR too, so a port with only closing connections
        # left is free for it, and must not be reported as taken here.
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


def start_children(host: str, port: int) -> list[Child]:
    bin_dir = os.path.dirname(sys.executable)
    return [
        Child("the web server (daphne)", subprocess.Popen(
            [os.path.join(bin_dir, "daphne"), "-b", host, "-p", str(port), "meshsite.asgi:application"])),
        Child("the Celery worker", subprocess.Popen(
            [os.path.join(bin_dir, "celery"), "-A", "meshsite", "worker", "--beat", "--pool=threads",
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
