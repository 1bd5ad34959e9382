"""The background waker: wake-ups leave the publishing thread, merge while it is busy, and a
failing lookup or broker does not stop later ones (the sweep covers what is lost)."""

from __future__ import annotations

import threading
import time

import pytest

from messaging.webhooks import delivery
from messaging.webhooks.waker import _Waker, wake_after_publish


def _wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.01)


def test_wakeups_run_off_the_callers_thread_merge_and_survive_failures(monkeypatch):
    calls: list[tuple[list[int], str]] = []
    gate = threading.Event()

    def wake_webhooks(queue_ids: list[int]) -> None:
        gate.wait(5)
        calls.append((queue_ids, threading.current_thread().name))
        if queue_ids == [13]:
            raise ConnectionError("broker down")

    monkeypatch.setattr(delivery, "wake_webhooks", wake_webhooks)
    waker = _Waker()
    waker.wake([13])  # fails
    _wait_for(lambda: waker._pending.empty())  # taken by the thread, which now waits on the gate
    waker.wake([2])
    waker.wake([1, 2])
    waker.wake([3])
    started = time.monotonic()
    gate.set()
    _wait_for(lambda: len(calls) == 2)
    assert calls == [([13], "meshsite-webhook-waker"), ([1, 2, 3], "meshsite-webhook-waker")]
    assert time.monotonic() - started < 5
    waker.wake([4])  # the thread lived through the failure
    _wait_for(lambda: len(calls) == 3)
    assert calls[2][0] == [4]


@pytest.mark.parametrize("background", [True, False])
def test_wake_after_publish_never_raises(monkeypatch, settings, background):
    settings.MESH_WEBHOOK_WAKE_IN_BACKGROUND = background
    seen = threading.Event()

    def broken(queue_ids: list[int]) -> None:
        seen.set()
        raise ConnectionError("broker down")

    monkeypatch.setattr(delivery, "wake_webhooks", broken)
    wake_after_publish([1])
    assert seen.wait(5)
