from django.contrib import admin

from .models import Message, Queue, Subscription, WebhookSubscription


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
    readonly_fields = ["queue", "uuid", "size", "content_type", "address", "qos", "created_at", "expires_at",
                       "delivery_count", "locked_until", "claim_id", "claimed_by", "death_reason", "dead_from",
                       "payload_preview"]

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
