"""Open Connectors' formulas API: `/elements/api-v2/formulas[...]`, for the bearer token of
an open-connectors service key, on that key's own formulas only (another tenant's are not
found). Answers in Open Connectors' shapes; errors in meshsite's own format."""

from __future__ import annotations

from typing import Any

from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from meshsite.errors import Invalid

from ..connectors import formulas as services
from ..connectors.formulas import selectors
from ..models import Formula, FormulaExecution, FormulaInstance, FormulaStep
from . import connectors_schema as doc
from .connectors import ConnectorsView

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
NEXT_PAGE = "Elements-Next-Page-Token"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def _formula(formula: Formula) -> dict[str, Any]:
    return {"id": formula.pk, "name": formula.name, "description": formula.description, "active": formula.active,
            "steps": formula.steps, "createdDate": _iso(formula.created_at), "updatedDate": _iso(formula.updated_at)}


def _instance(instance: FormulaInstance) -> dict[str, Any]:
    return {"id": instance.pk, "name": instance.name, "active": instance.active,
            "formula": {"id": instance.formula_id},
            "element": {"id": instance.connector_instance_id, "name": instance.connector_instance.name},
            "createdDate": _iso(instance.created_at)}


def _execution(execution: FormulaExecution) -> dict[str, Any]:
    return {"id": execution.pk, "formulaInstanceId": execution.formula_instance_id, "status": execution.status,
            "attempts": execution.attempts, "createdDate": _iso(execution.created_at),
            "nextAttemptDate": _iso(execution.next_attempt_at), "finishedDate": _iso(execution.finished_at),
            "error": execution.error}


def _step(step: FormulaStep) -> dict[str, Any]:
    return {"id": step.pk, "name": step.name, "type": step.step_type, "attempt": step.attempt,
            "startedDate": _iso(step.started_at), "durationMs": step.duration_ms,
            "status": "success" if step.succeeded else "failed", "result": step.result, "error": step.error}


def _body(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise Invalid("The body must be a JSON object")
    return request.data


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    return {name: body[name] for name in ("name", "description", "active", "steps") if name in body}


def _positive(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise Invalid(f"{name} must be a whole number, at least 1")
    return int(raw)


@doc.FORMULA_LIST
class FormulaListView(ConnectorsView):
    def get(self, request: Request) -> Response:
        return Response([_formula(f) for f in Formula.objects.filter(service_instance=self.owner).order_by("pk")])

    def post(self, request: Request) -> Response:
        fields = _fields(_body(request))
        fields.setdefault("name", None)
        fields.setdefault("steps", None)
        created = services.formula_create(service_instance=self.owner, **fields)
        return Response(_formula(created), status=status.HTTP_201_CREATED)


@doc.FORMULA
class FormulaView(ConnectorsView):
    def get(self, request: Request, pk: int) -> Response:
        return Response(_formula(selectors.formula_get(owner=self.owner, pk=pk)))

    def patch(self, request: Request, pk: int) -> Response:
        formula = selectors.formula_get(owner=self.owner, pk=pk)
        return Response(_formula(services.formula_update(formula=formula, **_fields(_body(request)))))

    def delete(self, request: Request, pk: int) -> Response:
        services.formula_delete(formula=selectors.formula_get(owner=self.owner, pk=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _element_id(body: dict[str, Any]) -> int:
    element = body.get("element")
    ref = element.get("id") if isinstance(element, dict) else None
    if not isinstance(ref, int) or isinstance(ref, bool):
        raise Invalid("element.id must be a connector instance id")
    return ref


@doc.FORMULA_INSTANCE_LIST
class FormulaInstanceListView(ConnectorsView):
    def get(self, request: Request, pk: int) -> Response:
        formula = selectors.formula_get(owner=self.owner, pk=pk)
        return Response([_instance(i) for i in selectors.formula_instances(formula=formula)])

    def post(self, request: Request, pk: int) -> Response:
        formula = selectors.formula_get(owner=self.owner, pk=pk)
        body = _body(request)
        created = services.formula_instance_create(
            formula=formula, connector_instance=self.connector(_element_id(body)), name=body.get("name"),
            active=body.get("active", True))
        return Response(_instance(created), status=status.HTTP_201_CREATED)


@doc.FORMULA_INSTANCE
class FormulaInstanceView(ConnectorsView):
    def get(self, request: Request, pk: int, instance_id: int) -> Response:
        return Response(_instance(selectors.formula_instance_get(owner=self.owner, pk=instance_id, formula_id=pk)))

    def delete(self, request: Request, pk: int, instance_id: int) -> Response:
        found = selectors.formula_instance_get(owner=self.owner, pk=instance_id, formula_id=pk)
        services.formula_instance_delete(instance=found)
        return Response(status=status.HTTP_204_NO_CONTENT)


@doc.EXECUTION_LIST
class ExecutionListView(ConnectorsView):
    """Newest first; `pageSize`, and `nextPage` from the previous page's Elements-Next-Page-Token."""

    def get(self, request: Request, instance_id: int) -> Response:
        instance = selectors.formula_instance_get(owner=self.owner, pk=instance_id)
        size = min(_positive(request, "pageSize", PAGE_SIZE) or PAGE_SIZE, MAX_PAGE_SIZE)
        page = selectors.executions_page(instance=instance, size=size, before=_positive(request, "nextPage", None))
        response = Response([_execution(e) for e in page])
        if len(page) == size:
            response[NEXT_PAGE] = str(page[-1].pk)
        return response


@doc.EXECUTION
class ExecutionView(ConnectorsView):
    def get(self, request: Request, execution_id: int) -> Response:
        execution = selectors.execution_get(owner=self.owner, pk=execution_id)
        steps = sorted(execution.steps.all(), key=lambda s: (s.attempt, s.started_at, s.pk))
        return Response({**_execution(execution), "trigger": execution.trigger,
                         "stepExecutions": [_step(s) for s in steps]})
