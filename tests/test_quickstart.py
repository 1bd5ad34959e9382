"""The README's quick start, run as written: its shell blocks go to bash in order, against a
live `manage.py meshrun` (what `make run` starts) with a database of its own, from a directory
laid out like the repository (`./manage.py`, `var/`) and a PATH without the project's venv, as
in a new user's second shell. Each step's answer is checked, not only the last one.

Also the first `make run`'s narration: the Makefile says what it does while it builds `.venv`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_live_server import PostgresDatabase, free_port, stop, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- quickstart: tests/test_quickstart.py runs this block as written -->"
README_RECEIVER_PORT = "9000"
# Printed before every command of the script (bash's DEBUG trap): the previous command's exit
# status and this command, on one line.
TRACE = """trap 's=$?; printf '"'"'\\n@@@ %s %s\\n'"'"' "$s" "${BASH_COMMAND//$'"'"'\\n'"'"'/ }"' DEBUG\n"""


@dataclass
class Step:
    command: str
    output: str
    status: int


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(re.escape(MARKER) + r"\n```sh\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 3, "the README's quick start, its webhook step and its Process Visibility step are marked"
    return blocks


def parse_steps(transcript: str) -> list[Step]:
    parts = re.split(r"\n@@@ (\d+) (.*)\n", "\n" + transcript)
    # parts: [before, status0, command1, output1, status1, command2, output2, ...]; a marker's
    # status belongs to the command before it, so the last command (the script's closing
    # `wait`, stopped by the test) has none and is left out.
    commands, outputs, statuses = parts[2::3], parts[3::3], [int(s) for s in parts[1::3]]
    return [Step(*step) for step in zip(commands, outputs, statuses[1:], strict=False)]


def step(steps: list[Step], fragment: str) -> Step:
    """The first step whose command ends with (or, failing that, contains) fragment."""
    found = [s for s in steps if s.command.endswith(fragment)] or [s for s in steps if fragment in s.command]
    assert found, f"no step runs {fragment!r}: {[s.command for s in steps]}"
    return found[0]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """`make run` as the README has it for the webhook step, on a free port and its own database."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "VIRTUAL_ENV")}
    env.update(MESH_VAR_DIR=str(tmp_path / "server"), MESH_PUBLIC_URL=base,
               MESH_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8", PYTHONUNBUFFERED="1")
    database = PostgresDatabase(os.environ["DATABASE_URL"]) if os.environ.get("DATABASE_URL") else None
    log = tmp_path / "meshrun.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        if database is not None:
            env["DATABASE_URL"] = database.create()
        with log.open("wb") as out:
            process = subprocess.Popen([sys.executable, "manage.py", "meshrun", "--port", str(port)], cwd=ROOT,
                                       env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until_serving(base, process, log)
        yield env
    finally:
        if process is not None:
            stop(process)
        if database is not None:
            database.drop()


def user_shell_env(server_env: dict[str, str]) -> dict[str, str]:
    """The second shell: the server's settings, but no venv on PATH (nothing activated)."""
    venv_bin = str(ROOT / ".venv" / "bin")
    path = [p for p in server_env["PATH"].split(os.pathsep)
            if p and Path(p).resolve() != Path(venv_bin).resolve() and Path(p) != Path(sys.executable).parent]
    return {**server_env, "PATH": os.pathsep.join(path)}


def run_script(script: str, cwd: Path, env: dict[str, str], until: str) -> str:
    """bash runs the script; its output is read until `until` appears (the webhook receiver
    keeps running in the background), or until bash ends, or after 120 s."""
    process = subprocess.Popen(["bash", "-c", script], cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    timer = threading.Timer(120, lambda: os.killpg(process.pid, signal.SIGKILL))
    timer.start()
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if until in line:
                break
    finally:
        timer.cancel()
        stop(process)
    return "".join(lines)


def test_readme_quick_start_runs_as_written(server, tmp_path):
    receiver_port = free_port()
    first, webhook, _ = readme_blocks()
    # The receiver's port, where it listens and in the subscription's endpoint.
    assert webhook.count(README_RECEIVER_PORT) == 2
    webhook = webhook.replace(README_RECEIVER_PORT, str(receiver_port))
    # A checkout's layout: ./manage.py (the real one, which finds the project's .venv) and the
    # var/ directory that `make run` creates.
    work = tmp_path / "checkout"
    (work / "var").mkdir(parents=True)
    (work / "manage.py").symlink_to(ROOT / "manage.py")
    script = TRACE + first + webhook + "wait\n"
    transcript = run_script(script, work, user_shell_env(server), until='received: {"id": 2}')
    steps = parse_steps(transcript)

    failed = [s for s in steps if s.status != 0]
    assert not failed, transcript
    assert '"name": "myem"' in step(steps, "create_service event-mesh").output
    key = (work / "var" / "key1.json").read_text()
    assert '"clientsecret"' in key
    assert step(steps, "TOKEN=$(curl").status == 0
    assert '"a/b/c/orders"' in step(steps, "-X PUT $M/queues/a%2Fb%2Fc%2Forders").output
    assert "[HTTP 201]" in step(steps, "-X PUT $M/queues/a%2Fb%2Fc%2Forders").output
    assert "[HTTP 201]" in step(steps, "subscriptions/a%2Fb%2Fc%2Fsales%2F%2B").output
    assert "[HTTP 204]" in step(steps, "-d '{\"id\": 1}'").output
    assert step(steps, "consumption").output.strip() == '{"id": 1} [HTTP 200]'
    message_id = step(steps, "echo \"message id: $ID\"").output.strip().removeprefix("message id: ")
    assert re.fullmatch(r"[0-9a-f-]{32,36}", message_id), transcript
    assert "[HTTP 200]" in step(steps, "acknowledgement").output
    assert "[HTTP 201]" in step(steps, "$R/subscriptions").output
    assert 'received: {"id": 2}' in transcript
    assert not (work / "key.json").exists()


def test_first_make_run_says_what_it_is_doing(tmp_path):
    # The real Makefile and a real `python -m venv`; only the package download (a minute of
    # network) is replaced, through the Makefile's own PIP_INSTALL.
    venv = tmp_path / "venv"
    done = subprocess.run(["make", "-C", str(ROOT), f"VENV={venv}", f"PYTHON={sys.executable}",
                           "PIP_INSTALL=true", f"{venv}/.installed"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stdout.splitlines() if line.startswith("meshsite: ")]
    assert [line.split()[1] for line in said] == ["creating", "installing", "dependencies"], done.stdout
    assert (venv / "bin" / "python").exists() and (venv / ".installed").exists()


def test_readme_process_visibility_steps_run_as_written(server, tmp_path):
    *_, visibility = readme_blocks()
    work = tmp_path / "checkout"
    (work / "var").mkdir(parents=True)
    (work / "manage.py").symlink_to(ROOT / "manage.py")
    transcript = run_script(TRACE + visibility + "echo pv-steps-finished\n", work, user_shell_env(server),
                            until="pv-steps-finished")
    steps = parse_steps(transcript)
    assert not [s for s in steps if s.status != 0], transcript
    assert '"endpoints"' in (work / "var" / "pvkey.json").read_text()
    assert step(steps, "-X POST $PV/scenarios -o").output.strip() == "[HTTP 201]", transcript
    assert step(steps, "activate").output.strip() == "[HTTP 200]", transcript
    assert step(steps, "-X POST $EVENTS").output.strip() == "[HTTP 204]", transcript
    assert step(steps, "/process").output.strip() == "[HTTP 200]", transcript
    # (bash's trace names each command of a pipeline: the answer is the jq step's output)
    assert step(steps, "jq -c '.instances").output.strip() == '["3567","completed",1296000]', transcript
    assert step(steps, "jq -c .values").output.strip() == (
        '[{"label":"On Track","value":1},{"label":"At Risk","value":0},{"label":"Critical","value":0}]'), transcript
