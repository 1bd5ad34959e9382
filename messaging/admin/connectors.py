"""The admin of connector events: read-only, deletes and redelivery through the services."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from meshsite.platform.admin import ReadOnlyAdmin, ServiceWritesAdmin

from ..connectors.instances import connector_instance_delete, shown_configuration
from ..connectors.queued import notifications_redeliver
from ..models import (
    ConnectorInstance,
    ConnectorNotification,
    Formula,
    FormulaExecution,
    FormulaInstance,
    FormulaStep,
    PollRun,
    PollState,
    VendorEvent,
)


@admin.register(ConnectorInstance)
class ConnectorInstanceAdmin(ServiceWritesAdmin):
    """Connector instances: viewed here, never added or changed (their configuration is
    written only through messaging.connectors.instances, which checks every key); deleted
    through `connector_instance_delete` (which takes the delivery queues along) and their
    queued notifications redelivered through `notifications_redeliver`."""

    list_display = ["name", "element_key", "service_instance", "event_mesh", "created_at"]
    list_filter = ["element_key"]
    search_fields = ["name", "service_instance__name"]
    list_select_related = ["service_instance", "event_mesh"]
    actions = ["redeliver_queued"]
    # The sealed signature key and the delivery engine's bookkeeping are not shown.
    fields = readonly_fields = ("service_instance", "name", "element_key", "configuration_shown", "event_mesh",
                                "topic_prefix", "provider_account", "created_at", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="configuration")
    def configuration_shown(self, obj: ConnectorInstance) -> str:
        return json.dumps(shown_configuration(obj), indent=2)

    def service_delete(self, obj: ConnectorInstance) -> None:
        connector_instance_delete(instance=obj)

    @admin.action(description="Redeliver the queued notifications of the selected connector instances")
    def redeliver_queued(self, request: HttpRequest, queryset: QuerySet[ConnectorInstance]) -> None:
        moved = sum(notifications_redeliver(instance=instance)
                    for instance in queryset.select_related("service_instance"))
        self.message_user(request, f"{moved} notification(s) redelivered")


def _excerpt(body: Any) -> str:
    return bytes(body)[:settings.MESH_CONNECTOR_MAX_SHOWN_BODY].decode("utf-8", "replace")


@admin.register(VendorEvent)
class VendorEventAdmin(ReadOnlyAdmin):
    """What providers posted: written by the vendor-webhook endpoint, normalized by its task."""

    list_display = ["received_at", "element_key", "connector_instance", "status", "reason", "events_count"]
    list_filter = ["status", "element_key"]
    search_fields = ["reason", "connector_instance__name"]
    list_select_related = ["connector_instance"]
    fields = readonly_fields = ("element_key", "connector_instance", "received_at", "status", "reason",
                                "events_count", "processed_at", "content_type", "body_excerpt")

    @admin.display(description="body")
    def body_excerpt(self, obj: VendorEvent) -> str:
        return _excerpt(obj.body)


@admin.register(ConnectorNotification)
class ConnectorNotificationAdmin(ReadOnlyAdmin):
    """Notifications as they were sent; their delivery state is the delivery engine's."""

    list_display = ["created_at", "notification_id", "connector_instance", "source", "events_count",
                    "topic_deliveries"]
    list_filter = ["source"]
    search_fields = ["notification_id", "connector_instance__name"]
    list_select_related = ["connector_instance"]
    fields = readonly_fields = ("notification_id", "connector_instance", "source", "vendor_event", "created_at",
                                "events_count", "message_uuid", "topic_deliveries", "topic_error", "body_excerpt")

    @admin.display(description="body")
    def body_excerpt(self, obj: ConnectorNotification) -> str:
        return _excerpt(obj.body)


@admin.register(PollState)
class PollStateAdmin(ReadOnlyAdmin):
    list_display = ["connector_instance", "object_type", "last_poll_at"]
    search_fields = ["object_type", "connector_instance__name"]
    list_select_related = ["connector_instance"]
    readonly_fields = ["connector_instance", "object_type", "last_poll_at", "seen"]


@admin.register(PollRun)
class PollRunAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "connector_instance", "object_type", "succeeded", "records", "events_count",
                    "duration_ms", "error"]
    list_filter = ["succeeded"]
    search_fields = ["object_type", "connector_instance__name"]
    list_select_related = ["connector_instance"]
    readonly_fields = ["connector_instance", "object_type", "started_at", "duration_ms", "succeeded", "records",
                       "events_count", "error"]


@admin.register(Formula)
class FormulaAdmin(ReadOnlyAdmin):
    """Formulas are written through the formulas API, which checks their steps."""

    list_display = ["name", "service_instance", "active", "updated_at"]
    list_filter = ["active"]
    search_fields = ["name", "service_instance__name"]
    list_select_related = ["service_instance"]
    readonly_fields = ["service_instance", "name", "description", "steps", "active", "created_at", "updated_at"]


@admin.register(FormulaInstance)
class FormulaInstanceAdmin(ReadOnlyAdmin):
    list_display = ["name", "formula", "connector_instance", "active", "created_at"]
    list_filter = ["active"]
    search_fields = ["name", "formula__name", "connector_instance__name"]
    list_select_related = ["formula", "connector_instance"]
    readonly_fields = ["formula", "connector_instance", "name", "active", "created_at"]


class FormulaStepInline(admin.TabularInline):
    model = FormulaStep
    extra = 0
    can_delete = False
    fields = readonly_fields = ("attempt", "name", "step_type", "started_at", "duration_ms", "succeeded", "result",
                                "error")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(FormulaExecution)
class FormulaExecutionAdmin(ReadOnlyAdmin):
    list_display = ["pk", "formula_instance", "status", "attempts", "created_at", "finished_at", "error"]
    list_filter = ["status"]
    search_fields = ["formula_instance__name", "error"]
    list_select_related = ["formula_instance"]
    readonly_fields = ["formula_instance", "notification", "trigger", "status", "attempts", "next_attempt_at",
                       "created_at", "finished_at", "error"]
    inlines = [FormulaStepInline]


@admin.register(FormulaStep)
class FormulaStepAdmin(ReadOnlyAdmin):
    list_display = ["execution", "attempt", "name", "step_type", "succeeded", "duration_ms", "error"]
    list_filter = ["succeeded", "step_type"]
    search_fields = ["name", "error"]
    list_select_related = ["execution"]
    readonly_fields = ["execution", "attempt", "name", "step_type", "started_at", "duration_ms", "succeeded",
                       "result", "error"]
