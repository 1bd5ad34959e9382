from django.contrib import admin

from .models import DeliveryAttempt, Message, Queue, Subscription, WebhookSubscription
from .services import dead_letters_requeue


class SubscriptionInline(admin.TabularInline):
    model = Subscription
    extra = 0
    fields = ["pattern", "created_at"]
    readonly_fields = ["created_at"]


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    list_display = ["name", "instance", "access_type", "max_redelivery_count", "dead_msg_queue", "created_at"]
    list_filter = ["access_type", "respect_ttl"]
    search_fields = ["name", "instance__name"]
    list_select_related = ["instance"]
    inlines = [SubscriptionInline]


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["pattern", "queue", "created_at"]
    search_fields = ["pattern", "queue__name"]
    list_select_related = ["queue"]
    readonly_fields = ["subaccount", "prefix"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["uuid", "queue", "address", "content_type", "size", "delivery_count", "locked_until",
                    "created_at", "death_reason"]
    list_filter = ["qos"]
    search_fields = ["uuid", "queue__name", "address"]
    list_select_related = ["queue"]
    exclude = ["payload"]
    actions = ["requeue_dead"]
    readonly_fields = ["queue", "uuid", "size", "content_type", "address", "qos", "created_at", "expires_at",
                       "delivery_count", "locked_until", "claim_id", "claimed_by", "death_reason", "dead_from",
                       "payload_preview"]

    @admin.action(description="Re-queue the selected dead messages to the queues they died in")
    def requeue_dead(self, request, queryset) -> None:  # type: ignore[no-untyped-def]
        moved = 0
        for message in queryset.select_related("queue__instance").exclude(dead_from=""):
            moved += dead_letters_requeue(
                instance=message.queue.instance, queue_name=message.queue.name, message_ids=[str(message.uuid)]
            )
        self.message_user(request, f"{moved} message(s) re-queued")

    @admin.display(description="payload (first 2 KiB)")
    def payload_preview(self, message: Message) -> str:
        return bytes(message.payload[:2048]).decode("utf-8", errors="replace")


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(admin.ModelAdmin):
    list_display = ["name", "instance", "queue", "endpoint", "status", "handshake_status", "last_successful_delivery",
                    "last_failed_delivery"]
    list_filter = ["status", "handshake_status"]
    search_fields = ["name", "endpoint", "instance__name"]
    list_select_related = ["instance", "queue"]
    exclude = ["security"]  # sealed credentials: nothing to read or edit here
    readonly_fields = ["handshake_reason", "last_successful_delivery", "last_failed_delivery",
                       "last_failed_delivery_reason", "created_at"]


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(admin.ModelAdmin):
    list_display = ["attempted_at", "subscription", "message_uuid", "succeeded", "status_code", "latency_ms", "error"]
    list_filter = ["succeeded"]
    search_fields = ["message_uuid", "subscription__name"]
    list_select_related = ["subscription"]
    readonly_fields = ["subscription", "message_uuid", "attempted_at", "succeeded", "status_code", "latency_ms",
                       "error", "response_excerpt"]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False
