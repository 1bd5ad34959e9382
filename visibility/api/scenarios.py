"""The scenarios and processing API under `/api/v1/pv/`: a Process Visibility key's tokens
model scenarios (PVDeveloper) and run their processing (PVAdmin). meshsite's own error
format (`{"detail", "code", "extra"}`); a scenario of another instance does not exist (404).
The same services as the cockpit's pages do the writes."""

from __future__ import annotations

import re
from typing import Any

from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from meshsite.errors import Conflict, Invalid, NotFound
from meshsite.platform.auth import Client, ServiceKeyAuthentication
from meshsite.platform.models import Service
from meshsite.platform.schema import MeshErrorSerializer

from .. import selectors_scenarios as selectors
from ..models import ProcessingRun, PVRole, RunTrigger, Scenario
from ..roles import key_has_role
from ..services import (
    instance_process,
    scenario_activate,
    scenario_create,
    scenario_data_clear,
    scenario_deactivate,
    scenario_delete,
    scenario_draft_discard,
    scenario_update,
)

TAG = ["Process Visibility scenarios"]
SLUG = re.compile(r"[-a-zA-Z0-9_]{1,100}")


class HoldsRole(BasePermission):
    """A token of a Process Visibility key that holds the view's role."""

    def has_permission(self, request: Request, view: Any) -> bool:
        client = request.user
        if not isinstance(client, Client):
            return False
        if client.instance.service != Service.PROCESS_VISIBILITY:
            self.message = "This API is Process Visibility's; the token's key belongs to another service"
            return False
        self.message = f"The service key does not hold the {view.role} role"
        return key_has_role(key_id=client.key_id, role=view.role)


class PVView(APIView):
    authentication_classes = [ServiceKeyAuthentication]
    permission_classes = [HoldsRole]
    role: str = PVRole.DEVELOPER

    @property
    def client(self) -> Client:
        return self.request.user  # type: ignore[return-value]

    def scenario(self, scenario_id: str) -> Scenario:
        # The route takes any segment so that every id gets this answer in this format; one
        # that is no slug (a NUL, which PostgreSQL text refuses, among them) is not looked up.
        found = None
        if SLUG.fullmatch(scenario_id):
            found = Scenario.objects.filter(instance=self.client.instance, scenario_id=scenario_id).first()
        if found is None:
            raise NotFound(f"No scenario {scenario_id!r} in this instance")
        return found


def scenario_json(scenario: Scenario) -> dict[str, Any]:
    return {
        "id": scenario.scenario_id, "name": scenario.name, "version": scenario.version,
        "state": selectors.scenario_state(scenario), "active": scenario.active, "draft": scenario.draft,
        "problems": selectors.scenario_problems(scenario),
        "activatedAt": scenario.activated_at.isoformat() if scenario.activated_at else None,
        "rebuildPending": scenario.rebuild_pending,
    }


def run_json(run: ProcessingRun) -> dict[str, Any]:
    return {
        "id": run.pk, "trigger": run.trigger, "status": run.status, "startedAt": run.started_at.isoformat(),
        "finishedAt": run.finished_at.isoformat() if run.finished_at else None,
        "eventsProcessed": run.events_processed, "eventsUnmatched": run.events_unmatched,
        "eventsInBuffer": run.events_in_buffer, "instancesCreated": run.instances_created,
        "instancesUpdated": run.instances_updated, "instancesDeleted": run.instances_deleted, "error": run.error,
    }


# --- what the OpenAPI document says ----------------------------------------------------------

class ProblemSerializer(serializers.Serializer):
    path = serializers.CharField()
    message = serializers.CharField()


class ScenarioSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    version = serializers.IntegerField()
    state = serializers.ChoiceField(choices=["draft", "active", "active-with-draft"])
    active = serializers.JSONField(allow_null=True, help_text="The version processing uses; null until activated")
    draft = serializers.JSONField(allow_null=True, help_text="The definition being edited; null when none")
    problems = ProblemSerializer(many=True, help_text="What blocks activating the draft")
    activatedAt = serializers.DateTimeField(allow_null=True)
    rebuildPending = serializers.BooleanField()


class RunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    trigger = serializers.ChoiceField(choices=RunTrigger.values)
    status = serializers.CharField()
    startedAt = serializers.DateTimeField()
    finishedAt = serializers.DateTimeField(allow_null=True)
    eventsProcessed = serializers.IntegerField()
    eventsUnmatched = serializers.IntegerField()
    eventsInBuffer = serializers.IntegerField()
    instancesCreated = serializers.IntegerField()
    instancesUpdated = serializers.IntegerField()
    instancesDeleted = serializers.IntegerField()
    error = serializers.CharField(allow_blank=True)


class RunsSerializer(serializers.Serializer):
    runs = RunSerializer(many=True)


class ProblemsSerializer(serializers.Serializer):
    problems = ProblemSerializer(many=True)


_NEW = inline_serializer("PVScenarioNew", {
    "id": serializers.CharField(), "name": serializers.CharField(required=False),
    "definition": serializers.JSONField(required=False)})
SCENARIO_ID = OpenApiParameter(
    "scenario_id", {"type": "string", "pattern": "^[-a-zA-Z0-9_]{1,100}$", "example": "onboarding"},
    OpenApiParameter.PATH, required=True, description="The scenario's id in the instance")
ERRORS = {400: "Malformed JSON, or a body the operation refuses (extra.problems when activation is blocked)",
          401: "No token, or an invalid one", 403: "The key is not a Process Visibility key, or lacks the role",
          404: "No such scenario in the token's instance", 409: "Not possible in the scenario's state",
          413: "Request body too large", 415: "Not application/json"}


def _responses(ok: dict[int, Any]) -> dict[int, Any]:
    return {**ok, **{code: OpenApiResponse(MeshErrorSerializer, description=text) for code, text in ERRORS.items()}}


# --- the views -----------------------------------------------------------------------------


class ScenarioListView(PVView):
    @extend_schema(tags=TAG, operation_id="pv_scenarios_list", summary="The instance's scenarios",
                   responses=_responses({200: ScenarioSerializer(many=True)}))
    def get(self, request: Request) -> Response:
        return Response([scenario_json(s) for s in selectors.scenarios_list(instance=self.client.instance)])

    @extend_schema(tags=TAG, operation_id="pv_scenarios_create", request=_NEW,
                   responses=_responses({201: ScenarioSerializer}),
                   summary="Create a scenario (a draft); without a definition it starts from the defaults")
    def post(self, request: Request) -> Response:
        body = request.data
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise Invalid('The body is {"id", "name", "definition"?}: id is the scenario id', extra={"field": "id"})
        definition = body.get("definition")
        name = body.get("name") or (definition.get("name") if isinstance(definition, dict) else None)
        if not isinstance(name, str):
            raise Invalid("name (or the definition's name) is required", extra={"field": "name"})
        scenario = scenario_create(instance=self.client.instance, scenario_id=body["id"], name=name,
                                   definition=definition)
        return Response(scenario_json(scenario), status=status.HTTP_201_CREATED)


class ScenarioView(PVView):
    @extend_schema(tags=TAG, operation_id="pv_scenario_get", parameters=[SCENARIO_ID],
                   responses=_responses({200: ScenarioSerializer}))
    def get(self, request: Request, scenario_id: str) -> Response:
        return Response(scenario_json(self.scenario(scenario_id)))

    @extend_schema(tags=TAG, operation_id="pv_scenario_put", parameters=[SCENARIO_ID], request=OpenApiTypes.OBJECT,
                   responses=_responses({200: ScenarioSerializer}),
                   summary="Save the definition as the draft (the active version keeps serving)")
    def put(self, request: Request, scenario_id: str) -> Response:
        scenario = self.scenario(scenario_id)
        if request.stream is None:  # no body: DRF would read it as {}, an empty draft
            raise Invalid("The body is the scenario's definition, a JSON object")
        scenario = scenario_update(scenario=scenario, definition=request.data)
        return Response(scenario_json(scenario))

    @extend_schema(tags=TAG, operation_id="pv_scenario_delete", parameters=[SCENARIO_ID],
                   responses=_responses({204: OpenApiResponse(description="Deleted, with its processed data")}))
    def delete(self, request: Request, scenario_id: str) -> Response:
        scenario_delete(scenario=self.scenario(scenario_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ScenarioActivateView(PVView):
    @extend_schema(tags=TAG, operation_id="pv_scenario_activate", parameters=[SCENARIO_ID], request=None,
                   responses=_responses({200: ScenarioSerializer}),
                   summary="Activate the draft; 400 with extra.problems when problems block it")
    def post(self, request: Request, scenario_id: str) -> Response:
        return Response(scenario_json(scenario_activate(scenario=self.scenario(scenario_id))))


class ScenarioDeactivateView(PVView):
    @extend_schema(tags=TAG, operation_id="pv_scenario_deactivate", parameters=[SCENARIO_ID], request=None,
                   responses=_responses({200: ScenarioSerializer}),
                   summary="Stop processing and serving the scenario; its definition becomes the draft")
    def post(self, request: Request, scenario_id: str) -> Response:
        return Response(scenario_json(scenario_deactivate(scenario=self.scenario(scenario_id))))


class ScenarioDiscardView(PVView):
    @extend_schema(tags=TAG, operation_id="pv_scenario_discard", parameters=[SCENARIO_ID], request=None,
                   responses=_responses({200: ScenarioSerializer}), summary="Drop the draft, keep the active version")
    def post(self, request: Request, scenario_id: str) -> Response:
        return Response(scenario_json(scenario_draft_discard(scenario=self.scenario(scenario_id))))


class ScenarioProblemsView(PVView):
    @extend_schema(tags=TAG, operation_id="pv_scenario_problems", parameters=[SCENARIO_ID],
                   responses=_responses({200: ProblemsSerializer}),
                   summary="What keeps the draft from being activated, each with the path of its field")
    def get(self, request: Request, scenario_id: str) -> Response:
        return Response({"problems": selectors.scenario_problems(self.scenario(scenario_id))})


class ScenarioRunsView(PVView):
    role = PVRole.ADMIN

    @extend_schema(tags=TAG, operation_id="pv_scenario_runs", parameters=[SCENARIO_ID],
                   responses=_responses({200: RunsSerializer}), summary="The scenario's latest processing runs")
    def get(self, request: Request, scenario_id: str) -> Response:
        runs = selectors.scenario_runs(scenario=self.scenario(scenario_id))
        return Response({"runs": [run_json(run) for run in runs]})


class ScenarioProcessView(PVView):
    role = PVRole.ADMIN

    @extend_schema(tags=TAG, operation_id="pv_scenario_process", parameters=[SCENARIO_ID], request=None,
                   responses=_responses({200: RunsSerializer}), summary="Process the buffer now; the runs it made")
    def post(self, request: Request, scenario_id: str) -> Response:
        scenario = self.scenario(scenario_id)
        if not scenario.is_active:
            raise Conflict("The scenario is not active: activate it first")
        return Response(_runs_of(scenario, trigger=RunTrigger.MANUAL))


class ScenarioClearView(PVView):
    role = PVRole.ADMIN

    @extend_schema(tags=TAG, operation_id="pv_scenario_clear", parameters=[SCENARIO_ID], request=None,
                   responses=_responses({200: RunsSerializer}),
                   summary="Delete the processed data and rebuild it from the stored events; the runs it made")
    def post(self, request: Request, scenario_id: str) -> Response:
        scenario = scenario_data_clear(scenario=self.scenario(scenario_id))
        return Response(_runs_of(scenario, trigger=RunTrigger.REBUILD))


def _runs_of(scenario: Scenario, *, trigger: str) -> dict[str, Any]:
    # Processing takes the instance's buffer for every active scenario at once; the answer
    # is this scenario's part of it.
    runs = instance_process(instance=scenario.instance, trigger=trigger)
    return {"runs": [run_json(run) for run in runs if run.scenario_id == scenario.pk]}


SCENARIO = "scenarios/<str:scenario_id>"
urlpatterns = [
    path("scenarios", ScenarioListView.as_view()),
    path(SCENARIO, ScenarioView.as_view()),
    path(f"{SCENARIO}/activate", ScenarioActivateView.as_view()),
    path(f"{SCENARIO}/deactivate", ScenarioDeactivateView.as_view()),
    path(f"{SCENARIO}/discard", ScenarioDiscardView.as_view()),
    path(f"{SCENARIO}/problems", ScenarioProblemsView.as_view()),
    path(f"{SCENARIO}/runs", ScenarioRunsView.as_view()),
    path(f"{SCENARIO}/process", ScenarioProcessView.as_view()),
    path(f"{SCENARIO}/clear", ScenarioClearView.as_view()),
]
