"""The store breaker's rules, with a fake clock: refuse at once while open, one probe per
interval, close on any successful connect."""

from __future__ import annotations

import psycopg
import pytest

from meshsite.storebreaker import Breaker, StoreUnavailable, is_outage


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _refused() -> None:
    raise psycopg.OperationalError("connection refused")


def test_an_open_breaker_refuses_without_probing_until_the_interval_passes():
    clock = Clock()
    breaker = Breaker(probe_interval=1.0, clock=clock)
    breaker.record(ok=False)
    probes: list[int] = []
    clock.now += 0.5
    with pytest.raises(StoreUnavailable):
        breaker.admit(lambda: probes.append(1))
    assert probes == []
    clock.now += 0.6
    breaker.admit(lambda: probes.append(1))
    assert probes == [1]
    assert not breaker.is_open


def test_a_failed_probe_keeps_it_open_for_another_interval():
    clock = Clock()
    breaker = Breaker(probe_interval=1.0, clock=clock)
    breaker.record(ok=False)
    clock.now += 2
    with pytest.raises(StoreUnavailable):
        breaker.admit(_refused)
    assert breaker.is_open
    with pytest.raises(StoreUnavailable):
        breaker.admit(lambda: None)  # within the interval of the failed probe: not tried


def test_a_background_connect_closes_it():
    breaker = Breaker(probe_interval=60.0, clock=Clock())
    breaker.record(ok=False)
    breaker.record(ok=True)
    breaker.admit(_refused)  # closed: no probe, no refusal


def test_a_refusal_by_a_running_server_is_not_an_outage():
    class TooManyClients(psycopg.OperationalError):
        sqlstate = "53300"

    class ShuttingDown(psycopg.OperationalError):
        sqlstate = "57P03"

    assert not is_outage(TooManyClients("too many clients"))
    assert is_outage(ShuttingDown("the database system is shutting down"))
    assert is_outage(psycopg.OperationalError("connection refused"))
