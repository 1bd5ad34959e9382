"""The SAP JSON shapes: queue objects, subscriptions and the writable queue attributes; webhook
subscriptions (the request body read into a WebhookSpec, the subscription object, the
delivery log)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.settings import api_settings

from meshsite.errors import Invalid

from ..models import MAX_REDELIVERY_DELAY_MS, AccessType, DeliveryAttempt, Queue, Subscription, WebhookSubscription
from ..selectors import QueueStats
from ..services import QueueAttributes, WebhookSpec
from ..webhooks.auth import SEALED_FIELDS

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def _body_error(message: str) -> serializers.ValidationError:
    # to_internal_value must raise a dict of errors; a bare string breaks DRF's ReturnDict.
    return serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [message]})


class StrictSerializer(serializers.Serializer):
    """Refuses attributes it does not know instead of silently ignoring them."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise _body_error("The body must be a JSON object")
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise _body_error(f"Unknown attribute(s): {', '.join(unknown)}")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class QueueAttributesSerializer(StrictSerializer):
    accessType = serializers.ChoiceField(choices=AccessType.values, required=False)
    maxQueueSizeInBytes = StrictIntegerField(min_value=0, max_value=INT64_MAX, required=False)
    maxQueueMessageCount = StrictIntegerField(min_value=0, max_value=INT64_MAX, required=False)
    maxMessageSizeInBytes = StrictIntegerField(min_value=0, max_value=INT64_MAX, required=False)
    respectTtl = StrictBooleanField(required=False)
    maxRedeliveryCount = StrictIntegerField(min_value=0, max_value=INT32_MAX, required=False)
    deadMsgQueue = StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=2400)
    maxDeliveredUnackedMsgsPerFlow = StrictIntegerField(min_value=0, max_value=INT32_MAX, required=False)
    # meshsite extensions (docs/api.md): the delay before a failed delivery is offered again.
    redeliveryDelayInMs = StrictIntegerField(min_value=0, max_value=MAX_REDELIVERY_DELAY_MS, required=False)
    maxRedeliveryDelayInMs = StrictIntegerField(min_value=0, max_value=MAX_REDELIVERY_DELAY_MS, required=False)

    def attributes(self) -> QueueAttributes:
        data = self.validated_data
        dead = data.get("deadMsgQueue", ...)
        return QueueAttributes(
            access_type=data.get("accessType"),
            max_queue_size_in_bytes=data.get("maxQueueSizeInBytes"),
            max_queue_message_count=data.get("maxQueueMessageCount"),
            max_message_size_in_bytes=data.get("maxMessageSizeInBytes"),
            respect_ttl=data.get("respectTtl"),
            max_redelivery_count=data.get("maxRedeliveryCount"),
            dead_msg_queue=dead if dead not in (..., None, "") else None,
            clear_dead_msg_queue=dead in (None, ""),
            max_delivered_unacked_msgs_per_flow=data.get("maxDeliveredUnackedMsgsPerFlow"),
            redelivery_delay_in_ms=data.get("redeliveryDelayInMs"),
            max_redelivery_delay_in_ms=data.get("maxRedeliveryDelayInMs"),
        )


class QueueSerializer(serializers.Serializer):
    """Read-only: the SAP queue object. `context["stats"]` maps queue pk -> QueueStats."""

    name = serializers.CharField()
    messageCount = serializers.SerializerMethodField()
    queueSizeInBytes = serializers.SerializerMethodField()
    unacknowledgedMessageCount = serializers.SerializerMethodField()
    maxQueueSizeInBytes = serializers.IntegerField(source="max_queue_size_in_bytes")
    maxQueueMessageCount = serializers.IntegerField(source="max_queue_message_count")
    maxMessageSizeInBytes = serializers.IntegerField(source="max_message_size_in_bytes")
    accessType = serializers.CharField(source="access_type")
    respectTtl = serializers.BooleanField(source="respect_ttl")
    maxRedeliveryCount = serializers.IntegerField(source="max_redelivery_count")
    deadMsgQueue = serializers.CharField(source="dead_msg_queue", allow_null=True)
    maxDeliveredUnackedMsgsPerFlow = serializers.IntegerField(source="max_delivered_unacked_msgs_per_flow")
    redeliveryDelayInMs = serializers.IntegerField(source="redelivery_delay_in_ms")
    maxRedeliveryDelayInMs = serializers.IntegerField(source="max_redelivery_delay_in_ms")

    def _stats(self, queue: Queue) -> QueueStats:
        return self.context["stats"][queue.pk]

    def get_messageCount(self, queue: Queue) -> int:
        return self._stats(queue).message_count

    def get_queueSizeInBytes(self, queue: Queue) -> int:
        return self._stats(queue).size_in_bytes

    def get_unacknowledgedMessageCount(self, queue: Queue) -> int:
        return self._stats(queue).unacknowledged


class QueueStatisticsSerializer(QueueSerializer):
    class Meta:
        fields = ["name", "messageCount", "queueSizeInBytes", "unacknowledgedMessageCount"]

    def get_fields(self) -> dict[str, serializers.Field]:
        all_fields = super().get_fields()
        return {name: all_fields[name] for name in self.Meta.fields}


class SubscriptionSerializer(serializers.Serializer):
    queueName = serializers.CharField(source="queue.name")
    topicPattern = serializers.CharField(source="pattern")

    @staticmethod
    def of(subscription: Subscription) -> dict[str, str]:
        return {"queueName": subscription.queue.name, "topicPattern": subscription.pattern}


# --- webhook subscriptions ---------------------------------------------------------------
# Read and written by hand, not by DRF serializers: the SAP body is refused with SAP's
# sentences (`qos must be a int`), and answers are built on every list and get. Their
# OpenAPI descriptions are the Webhook* serializers in openapi.py.

WEBHOOK_KEYS = {"name", "address", "qos", "pushConfig"}
PUSH_KEYS = {"type", "endpoint", "exemptHandshake", "defaultContentType", "securitySchema", "signatureSecrets"}


def _typed(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Invalid(f"{where} must be a {kind.__name__}")
    return value


def _unknown(data: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise Invalid(f"Unknown attribute(s) in {where}: {', '.join(unknown)}")


def webhook_spec(data: Any) -> WebhookSpec:
    """The create body (SAP's subscription object) as a WebhookSpec; the service checks the values."""
    _unknown(_typed(data, dict, "The body"), WEBHOOK_KEYS, "the body")
    address = _typed(data.get("address"), str, "address")
    if not address.startswith("queue:"):
        raise Invalid("address must be 'queue:<queue name>'")
    push = _typed(data.get("pushConfig"), dict, "pushConfig")
    _unknown(push, PUSH_KEYS, "pushConfig")
    if push.get("type", "webhook") != "webhook":
        raise Invalid("pushConfig.type must be 'webhook'")
    security = _typed(push.get("securitySchema") or {}, dict, "pushConfig.securitySchema")
    for key, value in security.items():
        _typed(value, str, f"securitySchema.{key}")
    secrets = _typed(push.get("signatureSecrets") or [], list, "pushConfig.signatureSecrets")
    return WebhookSpec(
        name=_typed(data.get("name"), str, "name"),
        queue_name=address.removeprefix("queue:"),
        qos=_typed(data.get("qos", 1), int, "qos"),
        endpoint=_typed(push.get("endpoint"), str, "pushConfig.endpoint"),
        exempt_handshake=_typed(push.get("exemptHandshake", False), bool, "pushConfig.exemptHandshake"),
        default_content_type=_typed(push.get("defaultContentType") or "", str, "pushConfig.defaultContentType"),
        security=security,
        signature_secrets=secrets,
    )


def webhook_action(data: Any) -> str:
    """The state body, `{"action": ...}`; the service checks the value."""
    _unknown(_typed(data, dict, "The body"), {"action"}, "the body")
    return str(_typed(data.get("action"), str, "action"))


def _stamp(value: Any) -> str | None:
    return value.isoformat() if value else None


def webhook_data(subscription: WebhookSubscription) -> dict[str, Any]:
    """The SAP subscription object; credentials are never returned."""
    security = {key: value for key, value in subscription.security.items() if key not in SEALED_FIELDS}
    return {
        "name": subscription.name,
        "address": f"queue:{subscription.queue.name}",
        "qos": subscription.qos,
        "pushConfig": {
            "type": "webhook",
            "endpoint": subscription.endpoint,
            "exemptHandshake": subscription.exempt_handshake,
            "defaultContentType": subscription.default_content_type or None,
            **({"securitySchema": security} if security else {}),
            "signed": bool(subscription.signing_secrets),
        },
        "subscriptionStatus": subscription.status,
        "handshakeStatus": subscription.handshake_status,
        "handshakeFailureReason": subscription.handshake_reason or None,
        "lastSuccessfulDelivery": _stamp(subscription.last_successful_delivery),
        "lastFailedDelivery": _stamp(subscription.last_failed_delivery),
        "lastFailedDeliveryReason": subscription.last_failed_delivery_reason or None,
        # meshsite extensions: endpoint health
        "consecutiveFailures": subscription.consecutive_failures,
        "failingSince": _stamp(subscription.failing_since),
        "nextAttemptAt": _stamp(subscription.next_attempt_at),
        "createdAt": _stamp(subscription.created_at),
    }


def attempt_data(attempt: DeliveryAttempt) -> dict[str, Any]:
    """One entry of the delivery log (a meshsite extension)."""
    return {
        "messageId": str(attempt.message_uuid),
        "attemptedAt": attempt.attempted_at.isoformat(),
        "succeeded": attempt.succeeded,
        "statusCode": attempt.status_code,
        "latencyMs": round(attempt.latency_ms, 2),
        "error": attempt.error or None,
        "responseExcerpt": attempt.response_excerpt or None,
    }
