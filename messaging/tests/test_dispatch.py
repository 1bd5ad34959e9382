"""Tasks are sent by name: the request path (services, the webhook waker) never loads
messaging/tasks.py, and the sender still honours Celery's eager mode, which tests use to
run a delivery inline."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from meshsite.celery import app as celery_app
from messaging import dispatch, tasks
from messaging.webhooks.delivery import RunResult

ROOT = Path(__file__).resolve().parents[2]
# The modules along the wake-up path: they import at module level only, so their imports
# show the real dependency graph (a function-local import hid a cycle through tasks.py).
WAKE_PATH_PACKAGES = ["messaging/services", "messaging/webhooks"]
WAKE_PATH_MODULES = ["messaging/dispatch.py", "messaging/tasks.py"]


def _function_local_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    found.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    return found


def test_the_wake_up_path_has_no_function_local_imports():
    files = [ROOT / module for module in WAKE_PATH_MODULES]
    files += [path for package in WAKE_PATH_PACKAGES for path in (ROOT / package).rglob("*.py")]
    assert len(files) > len(WAKE_PATH_MODULES)
    assert [hit for path in files for hit in _function_local_imports(path)] == []


def _run_fresh(program: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "meshsite.settings"}
    command = [sys.executable, "-c", program]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def test_importing_services_and_the_waker_does_not_load_tasks():
    # A fresh interpreter: this test process has long imported tasks.py.
    program = (
        "import json, sys, django; django.setup();"
        "import messaging.services, messaging.webhooks.waker, messaging.webhooks.subscriptions;"
        "print(json.dumps({m: m in sys.modules for m in"
        " ['messaging.tasks', 'messaging.dispatch', 'messaging.webhooks.delivery']}))"
    )
    done = _run_fresh(program)
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    # The wake-up path is loaded with services (no import at call time), tasks.py is not.
    assert loaded == {"messaging.tasks": False, "messaging.dispatch": True, "messaging.webhooks.delivery": True}


def test_eager_mode_resolves_a_task_by_name_without_tasks_loaded_beforehand():
    program = (
        "import json, sys, django; django.setup();"
        "from messaging import dispatch;"
        "before = 'messaging.tasks' in sys.modules;"
        "task = dispatch.task_named('messaging.tasks.webhook_deliver');"
        "print(json.dumps([before, task.name, 'messaging.tasks' in sys.modules]))"
    )
    done = _run_fresh(program)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [False, "messaging.tasks.webhook_deliver", True]


def test_eager_mode_runs_the_task_inline(monkeypatch):
    calls = []

    def run(*, subscription_id):
        calls.append(subscription_id)
        return RunResult(delivered=1, more=False)

    monkeypatch.setattr(tasks, "webhook_deliver_batch", run)
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    dispatch.webhook_deliver(42)
    assert calls == [42]


def test_without_eager_mode_the_task_goes_to_the_broker_by_name(monkeypatch):
    calls = []
    monkeypatch.setattr(tasks, "webhook_deliver_batch", lambda **kw: calls.append(kw))
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    queue = f"test-dispatch-{uuid.uuid4().hex}"  # private, so no other test's wake-up is read
    sent = dispatch.send(dispatch.WEBHOOK_DELIVER, 42, queue=queue)
    with celery_app.connection_for_read() as connection:
        inbox = connection.SimpleQueue(queue)
        try:
            message = inbox.get(timeout=10)
            message.ack()
            headers, body = message.headers, message.decode()
        finally:
            inbox.queue.delete()
            inbox.close()
    assert calls == []  # not run here
    assert (headers["task"], headers["id"]) == ("messaging.tasks.webhook_deliver", sent)
    assert body[0] == [42]  # (args, kwargs, embed)


def test_eager_mode_refuses_a_name_no_task_has(monkeypatch):
    # A typo in a task name must fail in the tests (eager), not only vanish in a worker.
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    with pytest.raises(KeyError):
        dispatch.send("messaging.tasks.no_such_task", 1)


def test_delivery_is_a_package_by_stage_that_keeps_its_names():
    from messaging.webhooks import delivery
    from messaging.webhooks.delivery import claim, lease, pushing, run, settle

    # Each stage imports only the stages before it, so the package has no cycle either.
    stages = {"lease": set(), "pushing": set(), "claim": {"lease"}, "settle": {"lease", "pushing"},
              "run": {"lease", "pushing", "claim", "settle"}}
    for module in (lease, pushing, claim, settle, run):
        tree = ast.parse(Path(str(module.__file__)).read_text())
        siblings = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}
        assert siblings == stages[module.__name__.rsplit(".", 1)[1]], module.__name__
    # What tests, tasks and bench/ take from the package is the stages' own object.
    assert delivery.push is pushing.push and delivery._claim is claim._claim and delivery._settle is settle._settle
    assert delivery.webhook_deliver_batch is run.webhook_deliver_batch and delivery.wake_webhooks is run.wake_webhooks
    assert set(delivery.__all__) <= set(dir(delivery))
