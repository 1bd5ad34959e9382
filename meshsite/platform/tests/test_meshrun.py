"""`manage.py meshrun` (what `make run` starts) as a real process on the embedded default: it
refuses a busy port at once with one line that says what to do, says what it is doing while
it starts, prints "meshsite is running" only once the server answers, and exits non-zero with
a one-line reason when one of its children dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_live_server import free_port, stop

BASE_DIR = Path(__file__).resolve().parents[3]
RUNNING = "meshsite is running"


def embedded_env(var_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "MESH_PUBLIC_URL")}
    env.update(MESH_VAR_DIR=str(var_dir), MESH_PUBLIC_URL=f"http://127.0.0.1:{port}",
               DJANGO_SETTINGS_MODULE="meshsite.settings", PYTHONUNBUFFERED="1")
    return env


def meshrun(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "manage.py", "meshrun", "--port", str(port)], cwd=BASE_DIR, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def read_until(process: subprocess.Popen[str], marker: str) -> list[str]:
    """stdout lines up to and including the first that contains marker (or all, if it exits)."""
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if marker in line:
            break
    return lines


def children_of(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def server_child(pid: int) -> int:
    for child in children_of(pid):
        if b"uvicorn" in Path(f"/proc/{child}/cmdline").read_bytes():
            return child
    raise AssertionError(f"no uvicorn among the children of {pid}")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, list[str]]]:
    port = free_port()
    process = meshrun(embedded_env(tmp_path, port), port)
    try:
        lines = read_until(process, RUNNING)
        yield process, port, lines
    finally:
        stop(process)


def test_busy_port_is_refused_at_once_with_one_line_saying_how_to_pick_another(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = meshrun(embedded_env(tmp_path, port), port)
        try:
            out, err = process.communicate(timeout=120)
        finally:
            stop(process)
    assert process.returncode != 0
    assert RUNNING not in out
    reason = [line for line in err.splitlines() if line.strip()]
    assert len(reason) == 1, err
    assert f"{port}" in reason[0] and "in use" in reason[0]
    assert "make run PORT=" in reason[0]
    # Refused before anything was started or migrated.
    assert not (tmp_path / "meshsite.sqlite3").exists()


def test_running_is_printed_once_the_server_answers_after_saying_what_it_does(running):
    process, port, lines = running
    assert process.poll() is None
    assert lines[-1].startswith(f"{RUNNING} on http://127.0.0.1:{port}"), lines
    assert lines[-1].endswith(f"the cockpit is at http://127.0.0.1:{port}/"), lines
    assert any("Log in to the cockpit" in line and "'admin'" in line for line in lines), lines
    # One attempt, no retry: the line must not come before the server answers.
    assert httpx.get(f"http://127.0.0.1:{port}/api/schema/", timeout=30).status_code == 200
    said = "\n".join(lines[:-1]).lower()
    for step in ("migrating", "seeding", "starting the web server (uvicorn)"):
        assert step in said, lines
    # The production server, with the parts the docs promise (not h11 or asyncio by fallback).
    command = Path(f"/proc/{server_child(process.pid)}/cmdline").read_bytes().split(b"\0")
    assert b"httptools" in command and b"uvloop" in command and b"--no-proxy-headers" in command, command


def test_a_child_that_dies_stops_meshrun_with_a_one_line_reason(running):
    process, _, _ = running
    children = children_of(process.pid)
    os.kill(server_child(process.pid), signal.SIGKILL)
    out, err = process.communicate(timeout=60)
    assert process.returncode not in (0, None)
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("meshsite stopped: the web server (uvicorn)"), err
    # The worker did not go on half-running without its web server.
    assert not [child for child in children if Path(f"/proc/{child}").exists()]
