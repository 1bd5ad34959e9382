"""The formulas' reads, each scoped to one open-connectors service instance (a tenant)."""

from __future__ import annotations

from django.db.models import QuerySet

from meshsite.errors import NotFound
from meshsite.platform.models import ServiceInstance

from ..models import Formula, FormulaExecution, FormulaInstance


def formula_get(*, owner: ServiceInstance, pk: int) -> Formula:
    found = Formula.objects.filter(service_instance=owner, pk=pk).first()
    if found is None:
        raise NotFound(f"Formula {pk} not found")
    return found


def formula_instances(*, formula: Formula) -> QuerySet[FormulaInstance]:
    return formula.instances.select_related("connector_instance").order_by("pk")


def formula_instance_get(*, owner: ServiceInstance, pk: int, formula_id: int | None = None) -> FormulaInstance:
    found = FormulaInstance.objects.filter(formula__service_instance=owner, pk=pk).select_related(
        "formula", "connector_instance")
    if formula_id is not None:
        found = found.filter(formula_id=formula_id)
    instance = found.first()
    if instance is None:
        raise NotFound(f"Formula instance {pk} not found")
    return instance


def executions_page(*, instance: FormulaInstance, size: int, before: int | None) -> list[FormulaExecution]:
    """Newest first, `size` at most, older than execution `before` (the page token): keyset
    paging, so executions started meanwhile do not shift the next page."""
    found = instance.executions.order_by("-pk")
    if before is not None:
        found = found.filter(pk__lt=before)
    return list(found[:size])


def execution_get(*, owner: ServiceInstance, pk: int) -> FormulaExecution:
    found = FormulaExecution.objects.filter(
        formula_instance__formula__service_instance=owner, pk=pk).prefetch_related("steps").first()
    if found is None:
        raise NotFound(f"Formula execution {pk} not found")
    return found
