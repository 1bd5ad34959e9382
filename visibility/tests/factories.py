"""Test data for Process Visibility: instances, scenarios and stored events."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from meshsite.platform.models import ServiceInstance, Subaccount
from meshsite.platform.services import entitlement_put, instance_create

from ..buffer import buffer_add
from ..models import Event, Scenario
from ..services import scenario_activate, scenario_create

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def ref(participant: str, event_type: str) -> dict[str, str]:
    return {"participant": participant, "eventType": event_type}


ORDER_TO_CASH: dict[str, Any] = {
    "name": "Order to cash",
    "instanceLabel": {"singular": "Order", "plural": "Orders"},
    "participants": [
        {"processDefinitionId": "order", "name": "Sales order", "businessKeyAttribute": "ORDER_ID",
         "events": [{"eventType": "CREATED", "name": "Order created"},
                    {"eventType": "APPROVED", "name": "Order approved"}]},
        {"processDefinitionId": "delivery", "name": "Delivery", "businessKeyAttribute": "ORDER_ID",
         "events": [{"eventType": "SHIPPED", "name": "Goods shipped"},
                    {"eventType": "DELIVERED", "name": "Goods delivered"}]},
    ],
    "context": [{"id": "ORDER_ID", "name": "Order", "type": "String"},
                {"id": "COUNTRY", "name": "Country", "type": "String"},
                {"id": "AMOUNT", "name": "Amount", "type": "Number"}],
    "state": {"completingEvents": [ref("delivery", "DELIVERED")]},
    "status": {"targetDuration": {"value": 10, "unit": "days"}, "threshold": 50},
    "phases": [
        {"id": "approval", "name": "Approval", "startEvents": [ref("order", "CREATED")],
         "endEvents": [ref("order", "APPROVED")]},
        {"id": "shipping", "name": "Shipping", "startEvents": [ref("delivery", "SHIPPED")],
         "endEvents": [ref("delivery", "DELIVERED")]},
    ],
    "attributes": [
        {"id": "timeToShip", "name": "Time to ship", "kind": "duration", "from": ref("order", "CREATED"),
         "to": ref("delivery", "SHIPPED")},
        {"id": "orderMonth", "name": "Month", "kind": "month", "of": "startTime"},
        {"id": "orderQuarter", "name": "Quarter", "kind": "quarter", "of": "startTime"},
    ],
    "indicators": [],
}


def order_to_cash() -> dict[str, Any]:
    definition = copy.deepcopy(ORDER_TO_CASH)
    from ..scenario import default_indicators

    definition["indicators"] = default_indicators("Orders") + [
        {"id": "amountByCountry", "title": "Amount by country", "measure": {"aggregate": "sum", "attribute": "AMOUNT"},
         "dimension": "COUNTRY", "filters": [], "chart": "bar"},
    ]
    return definition


def pv_instance(subaccount: Subaccount, name: str = "pv") -> ServiceInstance:
    entitlement_put(subaccount=subaccount, service="process-visibility", plan="standard", quota=10)
    return instance_create(subaccount=subaccount, service="process-visibility", plan="standard", name=name)


def active_scenario(instance: ServiceInstance, definition: dict[str, Any] | None = None,
                    scenario_id: str = "o2c") -> Scenario:
    definition = definition or order_to_cash()
    scenario = scenario_create(instance=instance, scenario_id=scenario_id, name=definition["name"],
                               definition=definition)
    return scenario_activate(scenario=scenario)


def event(instance: ServiceInstance, definition_id: str, pid: str | int, event_type: str, at: datetime | timedelta,
          event_id: str | None = None, **context: Any) -> Event:
    timestamp = T0 + at if isinstance(at, timedelta) else at
    stored = Event.objects.create(instance=instance, definition_id=definition_id, process_instance_id=str(pid),
                                  event_type=event_type, timestamp=timestamp, context=context, event_id=event_id,
                                  received_at=datetime.now(UTC))
    buffer_add(instance_id=instance.pk, event_ids=[stored.pk])
    return stored
