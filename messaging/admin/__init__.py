"""Event Mesh in the admin: every add, change and delete calls the service the API calls
(so it validates names, limits, rules and endpoints alike), or is not offered.

- Queues: add and change through `queue_put` (name and instance fixed once created),
  the inline topic subscriptions through `subscription_put` / `subscription_delete`,
  delete through `queue_delete`.
- Subscriptions: add and delete through the services; a pattern is not edited in place
  (the API has no such call): delete it and add the new one.
- Webhook subscriptions: add through `webhook_create` (with the SSRF guard on the
  endpoint), pause / resume / handshake as actions through the services, delete through
  `webhook_delete`; credentials and secrets are set through the API only.
- Messages and delivery attempts: read-only (publishing, consuming and acknowledging are
  the API's); dead messages are re-queued through `dead_letters_requeue`.
- Connector events: read-only; a connector instance is deleted through
  `connector_instance_delete` and its queued notifications redelivered through
  `notifications_redeliver` (an action); bodies, notifications, polls and formulas are viewed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from meshsite.errors import Conflict
from meshsite.platform.admin import ReadOnlyAdmin, ServiceWritesAdmin, adopt
from meshsite.platform.models import Service, ServiceInstance

from ..metrics.meter import KINDS
from ..models import (
    Connection,
    DeliveryAttempt,
    Message,
    Queue,
    QueueCounter,
    QueueMinute,
    ServerProcess,
    Subscription,
    Topology,
    WebhookSubscription,
    WsTicket,
)
from ..names import InvalidName, validate_pattern, validate_queue_name
from ..services import (
    QueueAttributes,
    dead_letters_requeue,
    queue_delete,
    queue_put,
    subscription_delete,
    subscription_put,
)
from ..webhooks.subscriptions import (
    WebhookSpec,
    webhook_create,
    webhook_delete,
    webhook_handshake_request,
    webhook_set_state,
)


def _valid(check: Callable[[str], str], value: str) -> str:
    try:
        return check(value)
    except InvalidName as error:
        raise ValidationError(str(error)) from None


class QueueForm(forms.ModelForm):
    class Meta:
        model = Queue
        fields = [
            "instance", "name", "access_type", "max_queue_size_in_bytes", "max_queue_message_count",
            "max_message_size_in_bytes", "respect_ttl", "max_redelivery_count", "dead_msg_queue",
            "max_delivered_unacked_msgs_per_flow", "redelivery_delay_in_ms", "max_redelivery_delay_in_ms",
        ]
        help_texts = {"dead_msg_queue": "A queue of the same instance; $namespace is replaced by its namespace"}

    def clean_name(self) -> str:
        return _valid(validate_queue_name, self.cleaned_data["name"])

    def attributes(self) -> QueueAttributes:
        data = self.cleaned_data
        dead = data.get("dead_msg_queue") or ""
        return QueueAttributes(
            access_type=data["access_type"],
            max_queue_size_in_bytes=data["max_queue_size_in_bytes"],
            max_queue_message_count=data["max_queue_message_count"],
            max_message_size_in_bytes=data["max_message_size_in_bytes"],
            respect_ttl=data["respect_ttl"],
            max_redelivery_count=data["max_redelivery_count"],
            dead_msg_queue=dead or None,
            clear_dead_msg_queue=not dead,
            max_delivered_unacked_msgs_per_flow=data["max_delivered_unacked_msgs_per_flow"],
            redelivery_delay_in_ms=data["redelivery_delay_in_ms"],
            max_redelivery_delay_in_ms=data["max_redelivery_delay_in_ms"],
        )


class PatternForm(forms.ModelForm):
    class Meta:
        model = Subscription
        fields = ["queue", "pattern"]

    def clean_pattern(self) -> str:
        return _valid(validate_pattern, self.cleaned_data["pattern"])


class SubscriptionInline(admin.TabularInline):
    model = Subscription
    form = PatternForm
    extra = 0
    fields = ["pattern", "created_at"]
    readonly_fields = ["created_at"]


def _event_mesh_instances(db_field: Any, kwargs: dict[str, Any]) -> None:
    if db_field.name == "instance":
        kwargs["queryset"] = ServiceInstance.objects.filter(service=Service.EVENT_MESH)


@admin.register(Queue)
class QueueAdmin(ServiceWritesAdmin):
    form = QueueForm
    list_display = ["name", "instance", "access_type", "max_redelivery_count", "dead_msg_queue", "created_at"]
    list_filter = ["access_type", "respect_ttl"]
    search_fields = ["name", "instance__name"]
    list_select_related = ["instance"]
    inlines = [SubscriptionInline]
    readonly_fields = ["exclusive_owner", "exclusive_until", "has_webhooks", "created_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Queue | None = None) -> list[str]:
        # The API addresses a queue by (instance, name): neither changes once it exists.
        return [*(["instance", "name"] if obj is not None else []), *self.readonly_fields]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        _event_mesh_instances(db_field, kwargs)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Queue, form: Any, change: bool) -> None:
        queue, created = queue_put(instance=obj.instance, name=obj.name, attributes=form.attributes())
        if created == change:  # an add found it existing, or a change found it gone: both raced
            raise Conflict(f"Queue {obj.name!r} was {'deleted' if change else 'created'} meanwhile; reload and retry")
        adopt(obj, queue)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not Subscription:
            super().save_formset(request, form, formset, change)
            return
        _save_subscriptions(form.instance, formset)

    def service_delete(self, obj: Queue) -> None:
        queue_delete(instance=obj.instance, name=obj.name)


def _save_subscriptions(queue: Queue, formset: Any) -> None:
    """The inline rows as service calls: an edited row is the old pattern deleted and the new
    one added. Deletes go first, so a full queue can swap a pattern within its limit."""
    rows = [row for row in formset.forms if row.has_changed() and row.is_valid()]
    formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
    for row in rows:
        old = row.initial.get("pattern") if row.instance.pk else None
        if old and (row.cleaned_data.get("DELETE") or row.cleaned_data["pattern"] != old):
            subscription_delete(instance=queue.instance, queue_name=queue.name, pattern=old)
            formset.deleted_objects.append(Subscription(queue=queue, pattern=old))
    for row in rows:
        old = row.initial.get("pattern") if row.instance.pk else None
        pattern = row.cleaned_data.get("pattern")
        if pattern and not row.cleaned_data.get("DELETE") and pattern != old:
            subscription, _ = subscription_put(instance=queue.instance, queue_name=queue.name, pattern=pattern)
            formset.new_objects.append(subscription)


@admin.register(Subscription)
class SubscriptionAdmin(ServiceWritesAdmin):
    form = PatternForm
    list_display = ["pattern", "queue", "created_at"]
    search_fields = ["pattern", "queue__name"]
    list_select_related = ["queue"]
    readonly_fields = ["subaccount", "prefix", "created_at"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # as in the API: delete the pattern and add the new one

    def save_model(self, request: HttpRequest, obj: Subscription, form: Any, change: bool) -> None:
        queue = obj.queue
        subscription, created = subscription_put(instance=queue.instance, queue_name=queue.name, pattern=obj.pattern)
        if not created:
            raise Conflict(f"{queue.name!r} already subscribes to {obj.pattern!r}")
        adopt(obj, subscription)

    def service_delete(self, obj: Subscription) -> None:
        queue = obj.queue
        subscription_delete(instance=queue.instance, queue_name=queue.name, pattern=obj.pattern)


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ["uuid", "queue", "address", "content_type", "size", "delivery_count", "locked_until",
                    "created_at", "death_reason"]
    list_filter = ["qos"]
    search_fields = ["uuid", "queue__name", "address"]
    list_select_related = ["queue"]
    exclude = ["payload"]
    actions = ["requeue_dead"]
    readonly_fields = ["queue", "uuid", "size", "content_type", "address", "qos", "created_at", "expires_at",
                       "delivery_count", "locked_until", "available_at", "claim_id", "claimed_by", "death_reason",
                       "dead_from", "payload_preview"]

    @admin.action(description="Re-queue the selected dead messages to the queues they died in")
    def requeue_dead(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        moved = 0
        for message in queryset.select_related("queue__instance").exclude(dead_from=""):
            moved += dead_letters_requeue(
                instance=message.queue.instance, queue_name=message.queue.name, message_ids=[str(message.uuid)]
            )
        self.message_user(request, f"{moved} message(s) re-queued")

    @admin.display(description="payload (first 2 KiB)")
    def payload_preview(self, message: Message) -> str:
        return bytes(message.payload[:2048]).decode("utf-8", errors="replace")


class WebhookForm(forms.ModelForm):
    qos = forms.TypedChoiceField(choices=[(0, "0 (at most once)"), (1, "1 (at least once)")], coerce=int, initial=1)

    class Meta:
        model = WebhookSubscription
        fields = ["instance", "name", "queue", "qos", "endpoint", "exempt_handshake", "default_content_type"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        instance, queue = data.get("instance"), data.get("queue")
        if instance is not None and queue is not None and queue.instance_id != instance.pk:
            raise ValidationError({"queue": "The queue must belong to the subscription's instance"})
        return data

    def spec(self) -> WebhookSpec:
        data = self.cleaned_data
        return WebhookSpec(
            name=data["name"], queue_name=data["queue"].name, qos=data["qos"], endpoint=data["endpoint"],
            exempt_handshake=data["exempt_handshake"], default_content_type=data["default_content_type"] or "",
        )


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(ServiceWritesAdmin):
    form = WebhookForm
    list_display = ["name", "instance", "queue", "endpoint", "status", "handshake_status", "last_successful_delivery",
                    "last_failed_delivery"]
    list_filter = ["status", "handshake_status"]
    search_fields = ["name", "endpoint", "instance__name"]
    list_select_related = ["instance", "queue"]
    actions = ["pause", "resume", "request_handshake"]
    readonly_fields = ["status", "handshake_status", "handshake_reason", "last_successful_delivery",
                       "last_failed_delivery", "last_failed_delivery_reason", "consecutive_failures",
                       "failing_since", "next_attempt_at", "created_at"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Sealed credentials and signing secrets are never shown; they are set through the API.
        return [*WebhookForm.Meta.fields, *(self.readonly_fields if obj is not None else [])]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the API has no update either: the actions below, or delete and create

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        _event_mesh_instances(db_field, kwargs)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: WebhookSubscription, form: Any, change: bool) -> None:
        adopt(obj, webhook_create(instance=obj.instance, spec=form.spec()))

    def service_delete(self, obj: WebhookSubscription) -> None:
        webhook_delete(instance=obj.instance, name=obj.name)

    def _each(self, request: HttpRequest, queryset: QuerySet[WebhookSubscription],
              call: Callable[[WebhookSubscription], object], done: str) -> None:
        for subscription in queryset.select_related("instance"):
            call(subscription)
        self.message_user(request, f"{queryset.count()} subscription(s) {done}")

    @admin.action(description="Pause the selected subscriptions")
    def pause(self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]) -> None:
        self._each(request, queryset, lambda s: webhook_set_state(instance=s.instance, name=s.name, action="pause"),
                   "paused")

    @admin.action(description="Resume the selected subscriptions")
    def resume(self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]) -> None:
        self._each(request, queryset, lambda s: webhook_set_state(instance=s.instance, name=s.name, action="resume"),
                   "resumed")

    @admin.action(description="Repeat the handshake of the selected subscriptions")
    def request_handshake(self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]) -> None:
        self._each(request, queryset, lambda s: webhook_handshake_request(instance=s.instance, name=s.name),
                   "asked for a handshake")


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(ReadOnlyAdmin):
    """The delivery log: written by the delivery engine, pruned by retention."""

    list_display = ["attempted_at", "subscription", "message_uuid", "succeeded", "status_code", "latency_ms", "error"]
    list_filter = ["succeeded"]
    search_fields = ["message_uuid", "subscription__name"]
    list_select_related = ["subscription"]
    readonly_fields = ["subscription", "message_uuid", "attempted_at", "succeeded", "status_code", "latency_ms",
                       "error", "response_excerpt"]


@admin.register(Connection)
class ConnectionAdmin(ReadOnlyAdmin):
    """Open WebSocket connections (AMQP and JSON), kept by the server processes that hold them."""

    list_display = ["opened_at", "instance", "protocol", "process"]
    list_filter = ["protocol"]
    search_fields = ["instance__name"]
    list_select_related = ["instance", "process"]
    readonly_fields = ["id", "instance", "process", "protocol", "opened_at"]


@admin.register(ServerProcess)
class ServerProcessAdmin(ReadOnlyAdmin):
    """Server processes holding WebSocket connections, with their last heartbeat."""

    list_display = ["id", "host", "started_at", "seen_at"]
    search_fields = ["id", "host"]
    readonly_fields = ["id", "host", "started_at", "seen_at"]


@admin.register(Topology)
class TopologyAdmin(ReadOnlyAdmin):
    """The topology version the processes' caches compare with (raised by every change)."""

    list_display = ["id", "version"]
    readonly_fields = ["version"]


@admin.register(WsTicket)
class WsTicketAdmin(ReadOnlyAdmin):
    """Unused JSON WebSocket tickets; only their checksums are stored, and those not shown."""

    list_display = ["expires_at", "user", "instance"]
    list_select_related = ["user", "instance"]
    readonly_fields = ["user", "instance", "expires_at"]
    exclude = ["checksum"]


_COUNTS = list(KINDS)


@admin.register(QueueMinute)
class QueueMinuteAdmin(ReadOnlyAdmin):
    """The meter's counts per queue and minute: written by each process's flush, pruned by the sweep."""

    list_display = ["minute", "queue", *_COUNTS]
    search_fields = ["queue__name"]
    list_select_related = ["queue"]
    readonly_fields = ["queue", "minute", *_COUNTS]
    date_hierarchy = "minute"


@admin.register(QueueCounter)
class QueueCounterAdmin(ReadOnlyAdmin):
    """Each queue's totals since it was created: what /metrics exports as counters."""

    list_display = ["queue", *_COUNTS]
    search_fields = ["queue__name"]
    list_select_related = ["queue"]
    readonly_fields = ["queue", *_COUNTS]


# The connector events' models (a module of their own to keep this one readable).
from . import connectors  # noqa: E402, F401
