"""The workspace's JSON API under `/api/v1/pv/scenarios/{scenarioId}/`: instances (filtered,
keyset-paged), one instance with its timeline, and indicator values. For the bearer token of
a Process Visibility service key holding PVOperator; scenarios of the token's instance only,
active version only. meshsite's own error format (meshsite/errors.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.urls import path
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from meshsite.errors import Invalid
from meshsite.platform.auth import Client, ServiceKeyAuthentication
from meshsite.platform.schema import MeshErrorSerializer

from .. import selectors_workspace as ws
from ..models import ProcessInstance, PVRole, Scenario
from ..roles import key_has_role

TAG = ["Process Visibility workspace"]
_ERROR = OpenApiResponse(MeshErrorSerializer)
ERRORS = {401: _ERROR, 403: _ERROR, 404: _ERROR}
SCENARIO = OpenApiParameter("scenarioId", str, OpenApiParameter.PATH, description="The scenario's id")


class HoldsOperator(BasePermission):
    message = "The service key needs the PVOperator role"

    def has_permission(self, request: Request, view: Any) -> bool:
        client = request.user
        return isinstance(client, Client) and key_has_role(key_id=client.key_id, role=PVRole.OPERATOR)


class WorkspaceView(APIView):
    authentication_classes = [ServiceKeyAuthentication]
    permission_classes = [HoldsOperator]

    def permission_denied(self, request: Request, message: str | None = None, code: str | None = None) -> None:
        if request.authenticators and not request.successful_authenticator:
            raise exceptions.NotAuthenticated("Bearer token required")
        super().permission_denied(request, message, code)

    def scenario(self, scenario_id: str) -> Scenario:
        client: Client = self.request.user  # type: ignore[assignment]
        return ws.scenario_active(instance=client.instance, scenario_id=scenario_id)


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def instance_data(instance: ProcessInstance) -> dict[str, Any]:
    return {"id": instance.pk, "label": instance.label, "state": instance.state,
            "status": getattr(instance, "current_status", instance.status),
            "activePhase": instance.active_phase or None,
            "startTime": _time(instance.start_time), "endTime": _time(instance.end_time),
            "cycleTime": instance.cycle_time, "eventCount": instance.event_count, "attributes": instance.attributes}


def detail_data(detail: ws.InstanceDetail) -> dict[str, Any]:
    return {
        **instance_data(detail.instance),
        "phases": [{"id": p.id, "name": p.name, "startedAt": _time(p.started_at), "endedAt": _time(p.ended_at),
                    "duration": p.duration} for p in detail.phases],
        "events": [{"timestamp": _time(e.timestamp), "eventType": e.event_type, "name": e.name,
                    "participant": e.participant, "processDefinitionId": e.definition_id,
                    "processInstanceId": e.process_instance_id, "context": e.context} for e in detail.events],
    }


def indicator_data(indicator: ws.Indicator) -> dict[str, Any]:
    return {"id": indicator.id, "title": indicator.title, "chart": indicator.chart, "measure": indicator.measure,
            "dimension": indicator.dimension, "values": indicator.values}


def _limit(raw: str | None) -> int:
    if raw is None:
        return 50
    try:
        return int(raw)
    except ValueError:
        raise Invalid("limit must be a whole number", extra={"parameter": "limit"}) from None


FILTERS = [
    OpenApiParameter("state", str, enum=["open", "completed"]),
    OpenApiParameter("status", str, enum=["on_track", "at_risk", "critical"]),
    OpenApiParameter("phase", str, description="A phase id of the scenario"),
    OpenApiParameter("attr.<id>", str, description="An attribute's value, e.g. attr.COUNTRY=DE"),
    OpenApiParameter("cursor", str, description="The nextCursor of the previous page"),
    OpenApiParameter("limit", int, description="1 to 200, default 50"),
]


class InstanceListView(WorkspaceView):
    @extend_schema(tags=TAG, operation_id="pv_instances_list",
                   summary="The scenario's process instances, newest first", parameters=[SCENARIO, *FILTERS],
                   responses={200: OpenApiResponse(description="{instances, nextCursor}"), 400: _ERROR, **ERRORS})
    def get(self, request: Request, scenario_id: str) -> Response:
        query = request.query_params
        attributes = {name.removeprefix("attr."): value for name, value in query.items() if name.startswith("attr.")}
        page = ws.instances_search(
            scenario=self.scenario(scenario_id), state=query.get("state"), status=query.get("status"),
            phase=query.get("phase"), attributes=attributes, cursor=query.get("cursor") or None,
            limit=_limit(query.get("limit")))
        return Response({"instances": [instance_data(row) for row in page.instances], "nextCursor": page.next_cursor})


class InstanceView(WorkspaceView):
    @extend_schema(tags=TAG, operation_id="pv_instance_get",
                   summary="One process instance with its phases and event timeline", parameters=[SCENARIO],
                   responses={200: OpenApiResponse(description="The instance"), **ERRORS})
    def get(self, request: Request, scenario_id: str, instance_id: int) -> Response:
        detail = ws.instance_detail(scenario=self.scenario(scenario_id), instance_id=instance_id)
        return Response(detail_data(detail))


class IndicatorListView(WorkspaceView):
    @extend_schema(tags=TAG, operation_id="pv_indicators_list",
                   summary="Every performance indicator of the scenario with its values", parameters=[SCENARIO],
                   responses={200: OpenApiResponse(description="[{id, title, chart, values}]"), **ERRORS})
    def get(self, request: Request, scenario_id: str) -> Response:
        return Response([indicator_data(i) for i in ws.indicators(scenario=self.scenario(scenario_id))])


class IndicatorView(WorkspaceView):
    @extend_schema(tags=TAG, operation_id="pv_indicator_get",
                   summary="One performance indicator with its values", parameters=[SCENARIO],
                   responses={200: OpenApiResponse(description="{id, title, chart, values}"), **ERRORS})
    def get(self, request: Request, scenario_id: str, indicator_id: str) -> Response:
        indicator = ws.indicator_get(scenario=self.scenario(scenario_id), indicator_id=indicator_id)
        return Response(indicator_data(indicator))


# Under api/v1/pv/scenarios/<scenario_id>/ (visibility/urls.py).
urlpatterns = [
    path("instances", InstanceListView.as_view(), name="pv-api-instances"),
    path("instances/<int:instance_id>", InstanceView.as_view(), name="pv-api-instance"),
    path("indicators", IndicatorListView.as_view(), name="pv-api-indicators"),
    path("indicators/<str:indicator_id>", IndicatorView.as_view(), name="pv-api-indicator"),
]
