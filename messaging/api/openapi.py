"""What the OpenAPI document says about the SAP endpoints that their code cannot say itself.

The `segment` path converter only knows "one path segment", so the document would offer
`^[^/]+$` for every name. Here each path parameter gets the rule the service really applies
(messaging/names.py), stated for the DECODED value: a client percent-encodes it into one
segment, `/` as `%2F`, as OpenAPI's simple style prescribes for path parameters. The error
bodies are SAP's `{"message": ...}`, whoever raises them (meshsite/errors.py).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from .. import names

_CHAR = r"[a-zA-Z0-9_.-]"
_NOT_DOT = r"[a-zA-Z0-9_-]"


def _segment(longest: int) -> str:
    """One name segment of 1..longest characters that is neither `.` nor `..`.

    Spelled without look-ahead, which not every JSON Schema tool's regex engine has: a
    segment starts with a non-dot, or a dot and a non-dot, or two dots and one more character.
    """
    return (
        rf"(?:{_NOT_DOT}{_CHAR}{{0,{longest - 1}}}"
        rf"|\.{_NOT_DOT}{_CHAR}{{0,{longest - 2}}}"
        rf"|\.\.{_CHAR}{{1,{longest - 2}}})"
    )


NAME_PATTERN = rf"^{_segment(111)}(?:/{_segment(109)}){{0,{names.MAX_SEGMENTS - 1}}}$"
_PATTERN_SEGMENT = rf"(?:{_segment(111)}|\+)"
TOPIC_PATTERN_PATTERN = rf"^(?:{_PATTERN_SEGMENT}/){{0,{names.MAX_SEGMENTS - 1}}}(?:{_PATTERN_SEGMENT}|\*)$"

_ENCODING = (
    " Sent as ONE percent-encoded path segment: every `/` as `%2F` "
    "(`a/b/c/orders` → `a%2Fb%2Fc%2Forders`)."
)
_NAME_RULE = (
    "1 to 20 `/`-separated segments of `[a-zA-Z0-9-_.]`, the first at most 111 and the others "
    "at most 109 characters, no segment `.` or `..`."
)


def _name_schema(pattern: str, example: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": names.MAX_NAME_LENGTH, "pattern": pattern,
            "example": example}


def _path(name: str, schema: dict[str, Any], description: str) -> OpenApiParameter:
    return OpenApiParameter(name, schema, OpenApiParameter.PATH, required=True, description=description)


QUEUE = _path("queue", _name_schema(NAME_PATTERN, "a/b/c/orders"), f"The queue's name: {_NAME_RULE}{_ENCODING}")
TOPIC = _path("topic", _name_schema(NAME_PATTERN, "a/b/c/orders/created"),
              f"A concrete topic (no wildcards): {_NAME_RULE}{_ENCODING}")
TOPIC_PATTERN = _path(
    "topic", _name_schema(TOPIC_PATTERN_PATTERN, "a/b/c/orders/*"),
    "A topic pattern: up to 20 `/`-separated segments, each up to 111 characters of "
    "`[a-zA-Z0-9-_.]` (not `.` or `..`), or `+` (exactly one segment), or `*` as the last "
    f"segment (one or more segments).{_ENCODING}",
)
WEBHOOK = _path("name", _name_schema(NAME_PATTERN, "orders-hook"),
                f"The webhook subscription's name: {_NAME_RULE}{_ENCODING}")
MESSAGE_ID = _path(
    "message_id", {"type": "string", "format": "uuid", "example": "3f0c1a52-6a43-4d0e-9c59-4d7f0c0f3f61"},
    "The `x-message-id` the consumption answered.",
)
LIMIT = OpenApiParameter(
    "limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, OpenApiParameter.QUERY,
    description="At most this many entries (1..1000, default 100)",
)


class SapErrorSerializer(serializers.Serializer):
    """Schema only: every error of the SAP-compatible endpoints."""

    message = serializers.CharField()


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(SapErrorSerializer, description=description)


# What any SAP endpoint can answer before or around its own work.
COMMON_ERRORS: dict[int, OpenApiResponse] = {
    401: error("Bearer token missing, malformed, invalid or expired (with `WWW-Authenticate`)"),
    403: error("The API is disabled in the instance's service descriptor, or its rules forbid the name"),
    503: error("The message store is unavailable; retry after `Retry-After` seconds"),
}
# Where a name travels in the path: a name that breaks the rules, or an unknown object.
NAME_ERRORS: dict[int, OpenApiResponse] = {
    400: error("A name in the path breaks the naming rules, or the request is otherwise invalid"),
    404: error("No such object, or a path segment holds control characters"),
}
# Where a JSON body is read.
BODY_ERRORS: dict[int, OpenApiResponse] = {
    400: error("The body is not valid JSON or breaks the rules, or a name in the path does"),
    413: error("The request body exceeds the server's limit"),
    415: error("The body is not `application/json`"),
}


def responses(ok: dict[Any, Any], *groups: dict[int, OpenApiResponse], **specific: OpenApiResponse) -> dict:
    """The success answers, then the error groups, then errors named by status (`e404=...`)."""
    merged: dict[Any, Any] = dict(ok)
    for group in (COMMON_ERRORS, *groups):
        merged.update(group)
    merged.update({int(key.removeprefix("e")): value for key, value in specific.items()})
    return merged


# Schema-only serializers: the bodies the webhook and extension endpoints build by hand.

class WebhookConflictErrorSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=["CONFLICT"])
    message = serializers.CharField()


class WebhookConflictSerializer(serializers.Serializer):
    error = WebhookConflictErrorSerializer()


class WebhookPushConfigCreateSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["webhook"], default="webhook")
    endpoint = serializers.CharField(help_text="A public http(s) URL (see MESH_WEBHOOK_ALLOWED_NETWORKS)")
    exemptHandshake = serializers.BooleanField(default=False)
    defaultContentType = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=255,
        help_text="Printable ASCII; sent for messages without a content type",
    )
    securitySchema = serializers.DictField(
        child=serializers.CharField(), required=False, allow_null=True,
        help_text="`{type: basicAuth, user, password}` or "
                  "`{type: oauth2, grantType: client_credentials, clientId, clientSecret, tokenUrl}`",
    )
    signatureSecrets = serializers.ListField(
        child=serializers.CharField(), required=False, allow_null=True, max_length=2,
        help_text="Standard Webhooks signing secrets (`whsec_...`): the new and the old while rotating",
    )


class WebhookSubscriptionCreateSerializer(serializers.Serializer):
    name = serializers.RegexField(NAME_PATTERN, max_length=names.MAX_NAME_LENGTH, help_text=_NAME_RULE)
    address = serializers.RegexField(r"^queue:", help_text="`queue:<queue name>`, a queue of this instance")
    qos = serializers.ChoiceField(choices=[0, 1], default=1)
    pushConfig = WebhookPushConfigCreateSerializer()


class WebhookPushConfigSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["webhook"])
    endpoint = serializers.CharField()
    exemptHandshake = serializers.BooleanField()
    defaultContentType = serializers.CharField(allow_null=True)
    securitySchema = serializers.DictField(
        child=serializers.CharField(), required=False, help_text="Without its password or clientSecret",
    )
    signed = serializers.BooleanField(help_text="Whether pushes carry Standard Webhooks signatures")


class WebhookSubscriptionSerializer(serializers.Serializer):
    name = serializers.CharField()
    address = serializers.CharField()
    qos = serializers.ChoiceField(choices=[0, 1])
    pushConfig = WebhookPushConfigSerializer()
    subscriptionStatus = serializers.ChoiceField(choices=["Active", "Paused"])
    handshakeStatus = serializers.ChoiceField(choices=["Pending", "Succeeded", "Failed", "Exempted"])
    handshakeFailureReason = serializers.CharField(allow_null=True)
    lastSuccessfulDelivery = serializers.DateTimeField(allow_null=True)
    lastFailedDelivery = serializers.DateTimeField(allow_null=True)
    lastFailedDeliveryReason = serializers.CharField(allow_null=True)
    consecutiveFailures = serializers.IntegerField(min_value=0)
    failingSince = serializers.DateTimeField(allow_null=True)
    nextAttemptAt = serializers.DateTimeField(allow_null=True)
    createdAt = serializers.DateTimeField()


class WebhookStateSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=["pause", "resume"])


class DeliveryAttemptSerializer(serializers.Serializer):
    messageId = serializers.UUIDField()
    attemptedAt = serializers.DateTimeField()
    succeeded = serializers.BooleanField()
    statusCode = serializers.IntegerField(allow_null=True, help_text="The receiver's status; null if none came")
    latencyMs = serializers.FloatField()
    error = serializers.CharField(allow_null=True)
    responseExcerpt = serializers.CharField(allow_null=True)


class BrowsedMessageSerializer(serializers.Serializer):
    messageId = serializers.UUIDField()
    address = serializers.CharField(help_text="Where it was published: `queue:<name>` or `topic:<topic>`")
    contentType = serializers.CharField()
    size = serializers.IntegerField(min_value=0)
    deliveryCount = serializers.IntegerField(min_value=0)
    createdAt = serializers.DateTimeField()
    expiresAt = serializers.DateTimeField()
    deathReason = serializers.CharField(allow_null=True)
    deadFrom = serializers.CharField(allow_null=True, help_text="The queue it died in, for a dead message")


class RequeueSerializer(serializers.Serializer):
    messageIds = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Without it, every dead message is re-queued",
    )


class RequeueResultSerializer(serializers.Serializer):
    requeued = serializers.IntegerField(min_value=0)


class ReadinessSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ready"])
