"""Performance indicators end to end: a few hundred events folded by processing, the
indicators read by the workspace, each value computed again here by hand from the orders
that made the events (not from the instances), on PostgreSQL and SQLite."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import mean
from typing import Any

import pytest

from ..selectors_workspace import indicator_values
from ..services import instance_process, instances_status_refresh
from .factories import T0, active_scenario, event, order_to_cash, pv_instance

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
NOW = T0 + 80 * DAY  # target 10 days, threshold 50 %: at risk after 5 days, critical after 10
COUNTRIES = ("DE", "FR", "US")


@dataclass(frozen=True)
class Order:
    number: int
    start: datetime
    approval: timedelta
    shipped_after: timedelta
    delivered_after: timedelta | None  # None: still open
    amount: int
    country: str


def _orders(count: int = 90) -> list[Order]:
    rng = random.Random(7)
    orders = []
    for n in range(count):
        delivered = None if n % 5 == 0 else timedelta(hours=rng.randint(30, 400))
        start = T0 + timedelta(days=rng.randint(0, 50)) if delivered is not None else NOW - timedelta(
            hours=rng.randint(1, 400))
        orders.append(Order(n, start, timedelta(hours=rng.randint(1, 20)), timedelta(hours=rng.randint(21, 29)),
                            delivered, rng.randint(1, 1000), COUNTRIES[n % 3]))
    return orders


def _send(pv, order: Order, rng: random.Random) -> None:
    sent: list[tuple[str, str, str, datetime, dict[str, Any]]] = [
        ("order", f"o-{order.number}", "CREATED", order.start,
         {"ORDER_ID": str(order.number), "COUNTRY": order.country, "AMOUNT": order.amount}),
        ("order", f"o-{order.number}", "APPROVED", order.start + order.approval, {}),
        ("delivery", f"d-{order.number}", "SHIPPED", order.start + order.shipped_after,
         {"ORDER_ID": str(order.number)}),
    ]
    if order.delivered_after is not None:
        sent.append(("delivery", f"d-{order.number}", "DELIVERED", order.start + order.delivered_after, {}))
    rng.shuffle(sent)  # arrival order is not business order
    for definition, pid, event_type, at, context in sent:
        event(pv, definition, pid, event_type, at, **context)


def _status(elapsed: timedelta) -> str:
    if elapsed > 10 * DAY:
        return "critical"
    return "at_risk" if elapsed > 5 * DAY else "on_track"


def _by_status(orders: list[Order], elapsed) -> list[dict]:
    counts: dict[str, int] = defaultdict(int)
    for order in orders:
        counts[_status(elapsed(order))] += 1
    return [{"label": label, "value": counts[key]} for key, label in
            (("on_track", "On Track"), ("at_risk", "At Risk"), ("critical", "Critical"))]


@pytest.fixture
def processed(subaccount):
    pv = pv_instance(subaccount)
    scenario = active_scenario(pv, order_to_cash())
    orders = _orders()
    rng = random.Random(3)
    for order in orders[:45]:
        _send(pv, order, rng)
    instance_process(instance=pv, now=NOW)  # two runs: some instances are folded twice
    for order in orders[45:]:
        _send(pv, order, rng)
    instance_process(instance=pv, now=NOW)
    instances_status_refresh(scenario=scenario, now=NOW)
    scenario.refresh_from_db()
    return scenario, orders


def _indicator(scenario, indicator_id: str) -> dict:
    return next(item for item in scenario.active["indicators"] if item["id"] == indicator_id)


def test_the_fixture_holds_a_few_hundred_events_over_open_and_completed_orders(processed):
    scenario, orders = processed
    assert scenario.instances.count() == len(orders) == 90
    assert sum(instance.event_count for instance in scenario.instances.all()) == 90 * 4 - 18


def test_open_instances_by_status(processed):
    scenario, orders = processed
    open_ = [order for order in orders if order.delivered_after is None]
    expected = _by_status(open_, lambda order: NOW - order.start)
    assert indicator_values(scenario=scenario, indicator=_indicator(scenario, "openInstances"), now=NOW) == expected
    assert sum(value["value"] for value in expected) == 18 and len({v["value"] for v in expected}) > 1


def test_completed_instances_by_status_at_completion(processed):
    scenario, orders = processed
    done = [order for order in orders if order.delivered_after is not None]
    expected = _by_status(done, lambda order: order.delivered_after)
    values = indicator_values(scenario=scenario, indicator=_indicator(scenario, "completedByStatus"), now=NOW)
    assert values == expected and sum(value["value"] for value in values) == 72


def test_average_cycle_time_by_month(processed):
    scenario, orders = processed
    months: dict[str, list[float]] = defaultdict(list)
    for order in orders:
        if order.delivered_after is not None:
            months[f"{order.start:%Y-%m}"].append(order.delivered_after.total_seconds())
    values = indicator_values(scenario=scenario, indicator=_indicator(scenario, "cycleTime"), now=NOW)
    assert [value["label"] for value in values] == sorted(months)
    for value in values:
        assert value["value"] == pytest.approx(mean(months[value["label"]]))


def test_average_step_cycle_time_by_phase(processed):
    scenario, orders = processed
    approval = mean(order.approval.total_seconds() for order in orders)
    shipping = mean((order.delivered_after - order.shipped_after).total_seconds()
                    for order in orders if order.delivered_after is not None)
    values = indicator_values(scenario=scenario, indicator=_indicator(scenario, "stepCycleTime"), now=NOW)
    assert [value["label"] for value in values] == ["Approval", "Shipping"]
    assert [value["value"] for value in values] == [pytest.approx(approval), pytest.approx(shipping)]


def test_sum_of_a_number_attribute_by_a_string_attribute(processed):
    scenario, orders = processed
    totals: dict[str, int] = defaultdict(int)
    for order in orders:
        totals[order.country] += order.amount
    values = indicator_values(scenario=scenario, indicator=_indicator(scenario, "amountByCountry"), now=NOW)
    assert values == [{"label": country, "value": totals[country]} for country in sorted(COUNTRIES)]


@pytest.mark.parametrize("aggregate, expected", [
    ("min", min), ("max", max), ("avg", mean), ("count", len),
])
def test_aggregates_of_a_calculated_duration_with_a_filter(processed, aggregate, expected):
    scenario, orders = processed
    indicator = {"id": "x", "title": "x", "measure": {"aggregate": aggregate, "attribute": "timeToShip"},
                 "dimension": None, "filters": [{"attribute": "COUNTRY", "values": ["FR", "US"]}], "chart": "bar"}
    hours = [order.shipped_after.total_seconds() for order in orders if order.country in ("FR", "US")]
    [value] = indicator_values(scenario=scenario, indicator=indicator, now=NOW)
    assert value["value"] == pytest.approx(expected(hours))
