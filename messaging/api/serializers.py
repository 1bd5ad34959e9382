"""The SAP JSON shapes: queue objects, subscriptions and the writable queue attributes."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.settings import api_settings

from ..models import AccessType, Queue, Subscription
from ..selectors import QueueStats
from ..services import QueueAttributes

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
