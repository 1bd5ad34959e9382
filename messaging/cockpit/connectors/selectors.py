"""The Open Connectors pages' own reads, each a fixed number of queries whatever the number
of connector instances or executions."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Prefetch, Q, QuerySet

from meshsite.platform.models import Service, ServiceInstance, Subaccount

from ...connectors.delivery import queue_names
from ...models import (
    ConnectorInstance,
    Formula,
    FormulaExecution,
    FormulaInstance,
    FormulaStep,
    Message,
    VendorEvent,
    VendorEventStatus,
)


@dataclass(frozen=True)
class ConnectorRow:
    connector: ConnectorInstance
    notifications: int
    queued: int
    failed_bodies: int


def connector_services(*, subaccount: Subaccount) -> QuerySet[ServiceInstance]:
    return subaccount.instances.filter(service=Service.OPEN_CONNECTORS).annotate(
        connector_count=Count("connector_instances")).order_by("name")


def connector_rows(*, owner: ServiceInstance) -> list[ConnectorRow]:
    """The connector instances of `owner` with their counts: two queries."""
    connectors = list(ConnectorInstance.objects.filter(service_instance=owner).select_related("event_mesh").annotate(
        notification_count=Count("notifications", distinct=True),
        failed_count=Count("vendor_events", filter=Q(vendor_events__status=VendorEventStatus.FAILED),
                           distinct=True),
    ).order_by("name"))
    # A notification is queued while its message sits in the connector's dead message queue.
    held = dict(Message.objects.filter(queue__instance=owner, queue__name__in=[queue_names(c)[1] for c in connectors])
                .values("queue__name").annotate(n=Count("pk")).values_list("queue__name", "n"))
    return [ConnectorRow(c, getattr(c, "notification_count", 0), held.get(queue_names(c)[1], 0),
                         getattr(c, "failed_count", 0)) for c in connectors]


def body_excerpt(row: VendorEvent) -> str:
    return bytes(row.body)[:settings.MESH_CONNECTOR_MAX_SHOWN_BODY].decode("utf-8", "replace")


def formulas_of(*, owner: ServiceInstance) -> QuerySet[Formula]:
    return Formula.objects.filter(service_instance=owner).annotate(
        instance_count=Count("instances", distinct=True)).order_by("name")


def formula_instances(*, formula: Formula) -> QuerySet[FormulaInstance]:
    return formula.instances.select_related("connector_instance").annotate(
        execution_count=Count("executions")).order_by("name")


def executions_recent(*, formula: Formula, limit: int = 50) -> list[FormulaExecution]:
    """The formula's latest executions with their steps (oldest attempt first): two queries."""
    steps = Prefetch("steps", queryset=FormulaStep.objects.order_by("attempt", "started_at", "pk"))
    return list(FormulaExecution.objects.filter(formula_instance__formula=formula)
                .select_related("formula_instance").prefetch_related(steps).order_by("-pk")[:limit])
