"""Process Visibility's admin. Scenarios are written through the scenario services (a change
saves a draft; activation, processing and clearing are actions); events, the buffer and the
processed data are read-only here, because they are written by ingestion and processing only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from meshsite.platform.admin import REFUSALS, ReadOnlyAdmin, ServiceWritesAdmin, adopt

from .models import (
    BufferedEvent,
    Correlation,
    Event,
    IngestFailure,
    InstancePhase,
    ProcessingRun,
    ProcessInstance,
    RoleGrant,
    RunTrigger,
    Scenario,
)
from .services import (
    failure_discard,
    instance_process,
    role_grant,
    role_revoke,
    scenario_activate,
    scenario_create,
    scenario_data_clear,
    scenario_deactivate,
    scenario_delete,
    scenario_update,
)


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["timestamp", "definition_id", "process_instance_id", "event_type", "event_id", "instance",
                    "received_at", "matched"]
    list_filter = ["instance", "definition_id", "event_type", "matched"]
    search_fields = ["process_instance_id", "event_id", "definition_id"]
    date_hierarchy = "timestamp"
    list_select_related = ["instance"]


@admin.register(BufferedEvent)
class BufferedEventAdmin(ReadOnlyAdmin):
    list_display = ["event", "instance"]
    list_select_related = ["event", "instance"]


def _each(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any], verb: str,
          run: Any) -> None:
    done = 0
    for scenario in queryset:
        try:
            run(scenario)
            done += 1
        except REFUSALS as error:
            message = str(error)
            extra = getattr(error, "extra", None)
            if isinstance(extra, dict) and extra.get("problems"):
                message += ": " + "; ".join(f"{p['path'] or '(definition)'} {p['message']}" for p in extra["problems"])
            modeladmin.message_user(request, f"{scenario}: {message}", level=messages.ERROR)
    if done:
        modeladmin.message_user(request, f"{verb}: {done} {queryset.model._meta.verbose_name}(s)")


class PhaseInline(admin.TabularInline):
    model = InstancePhase
    fields = readonly_fields = ("phase_id", "started_at", "ended_at", "duration")
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Scenario)
class ScenarioAdmin(ServiceWritesAdmin):
    """Add and change save the definition as the draft (scenario_create / scenario_update);
    the active version changes only by the Activate action."""

    list_display = ["name", "scenario_id", "instance", "version", "activated_at", "has_draft", "rebuild_pending"]
    list_filter = ["instance"]
    search_fields = ["name", "scenario_id"]
    actions = ["activate", "process_now", "clear_processed", "deactivate"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ["instance", "scenario_id", "name", "draft"] + (
            ["active", "version", "activated_at", "rebuild_pending"] if obj else [])

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["instance", "scenario_id", "name", "active", "version", "activated_at", "rebuild_pending"] if obj \
            else []

    @admin.display(boolean=True, description="draft")
    def has_draft(self, scenario: Scenario) -> bool:
        return scenario.draft is not None

    def save_model(self, request: HttpRequest, obj: Scenario, form: Any, change: bool) -> None:
        if change:
            adopt(obj, scenario_update(scenario=obj, definition=obj.draft))
        else:
            adopt(obj, scenario_create(instance=obj.instance, scenario_id=obj.scenario_id, name=obj.name,
                                       definition=obj.draft))

    def service_delete(self, obj: Scenario) -> None:
        scenario_delete(scenario=obj)

    @admin.action(description="Activate the draft")
    def activate(self, request: HttpRequest, queryset: QuerySet[Scenario]) -> None:
        _each(self, request, queryset, "Activated", lambda s: scenario_activate(scenario=s))

    @admin.action(description="Process data now")
    def process_now(self, request: HttpRequest, queryset: QuerySet[Scenario]) -> None:
        _each(self, request, queryset, "Processed",
              lambda s: instance_process(instance=s.instance, trigger=RunTrigger.MANUAL))

    @admin.action(description="Clear processed data and re-process")
    def clear_processed(self, request: HttpRequest, queryset: QuerySet[Scenario]) -> None:
        def clear(scenario: Scenario) -> None:
            scenario_data_clear(scenario=scenario)
            instance_process(instance=scenario.instance, trigger=RunTrigger.REBUILD)

        _each(self, request, queryset, "Cleared and re-processed", clear)

    @admin.action(description="Deactivate")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[Scenario]) -> None:
        _each(self, request, queryset, "Deactivated", lambda s: scenario_deactivate(scenario=s))


@admin.register(ProcessInstance)
class ProcessInstanceAdmin(ReadOnlyAdmin):
    list_display = ["label", "scenario", "state", "status", "active_phase", "start_time", "end_time", "event_count"]
    list_filter = ["scenario", "state", "status"]
    search_fields = ["label", "key"]
    list_select_related = ["scenario"]
    inlines = [PhaseInline]


@admin.register(Correlation)
class CorrelationAdmin(ReadOnlyAdmin):
    list_display = ["definition_id", "process_instance_id", "instance_key", "scenario"]
    list_filter = ["scenario"]
    search_fields = ["process_instance_id", "instance_key"]


@admin.register(ProcessingRun)
class ProcessingRunAdmin(ReadOnlyAdmin):
    list_display = ["scenario", "trigger", "status", "started_at", "finished_at", "events_processed",
                    "events_unmatched", "events_in_buffer", "instances_created", "instances_updated"]
    list_filter = ["scenario", "status", "trigger"]


@admin.register(IngestFailure)
class IngestFailureAdmin(ReadOnlyAdmin):
    """Read-only, with Discard as an action (failure_discard); correcting a payload and
    re-submitting it is the Event Acquisition monitor's, which shows the problems beside it."""

    list_display = ["received_at", "reason", "field", "definition_id", "process_instance_id", "instance", "state"]
    list_filter = ["instance", "reason", "state"]
    search_fields = ["definition_id", "process_instance_id", "detail"]
    actions = ["discard"]

    @admin.action(description="Discard the failure")
    def discard(self, request: HttpRequest, queryset: QuerySet[IngestFailure]) -> None:
        _each(self, request, queryset, "Discarded", lambda failure: failure_discard(failure=failure))


class RoleGrantForm(forms.ModelForm):
    class Meta:
        model = RoleGrant
        fields = ["instance", "role", "service_key", "user"]


@admin.register(RoleGrant)
class RoleGrantAdmin(ServiceWritesAdmin):
    """Grants go through role_grant (the role exists, the key is the instance's, the user a
    member of its subaccount) and role_revoke; a grant is never changed, only revoked."""

    form = RoleGrantForm
    list_display = ["role", "instance", "service_key", "user"]
    list_filter = ["instance", "role"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: RoleGrant, form: Any, change: bool) -> None:
        adopt(obj, role_grant(instance=obj.instance, role=obj.role, user=obj.user, service_key=obj.service_key))

    def service_delete(self, obj: RoleGrant) -> None:
        role_revoke(grant=obj)


@admin.register(InstancePhase)
class InstancePhaseAdmin(ReadOnlyAdmin):
    list_display = ["instance", "phase_id", "started_at", "ended_at", "duration"]
    list_filter = ["scenario", "phase_id"]
    list_select_related = ["instance"]
