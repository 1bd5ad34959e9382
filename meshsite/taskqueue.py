"""Celery tasks, sent by name, for every app.

Services start tasks through their app's dispatch module and never import a tasks.py: the
tasks import the services, so importing them back made a cycle that only function-local
imports held together. Only Celery (the worker's autodiscovery) loads tasks.py.

`send_task` does not honour `task_always_eager`, which tests use to run a task inline
inside their transaction, so in eager mode the task is looked up by name and applied here,
as `delay()` would have done. Callers keep sending after their commit
(`transaction.on_commit`): a task must not find a row its sender has not committed.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from meshsite.celery import app


def task_named(name: str) -> Task:
    """The registered task called `name`, loading the task modules first if need be (in
    eager mode nothing else may have imported them)."""
    if name not in app.tasks:
        app.loader.import_default_modules()  # runs the app's autodiscovery of tasks.py
    return app.tasks[name]  # a KeyError (NotRegistered) for a name no task has


def send(name: str, *args: Any, countdown: float | None = None, **options: Any) -> str:
    """Send task `name` with these positional arguments; returns the task id. Broker
    errors reach the caller, which decides whether a lost wake-up matters."""
    if app.conf.task_always_eager:
        return str(task_named(name).apply(args=args).id)
    return str(app.send_task(name, args=args, countdown=countdown, **options).id)
