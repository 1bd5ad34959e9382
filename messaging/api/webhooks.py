"""Webhook subscriptions API: `/messagingrest/v1/subscriptions` in SAP's shapes (a duplicate
name answers 409 with SAP's `{"error": {"code": "CONFLICT", ...}}` body)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from meshsite.errors import Conflict, Invalid

from ..webhooks import subscriptions as webhooks
from .base import SapView
from .openapi import (
    BODY_ERRORS,
    LIMIT,
    NAME_ERRORS,
    WEBHOOK,
    DeliveryAttemptSerializer,
    WebhookConflictSerializer,
    WebhookStateSerializer,
    WebhookSubscriptionCreateSerializer,
    WebhookSubscriptionSerializer,
    error,
    responses,
)

TAG = ["Event Mesh webhooks"]
BODY_KEYS = {"name", "address", "qos", "pushConfig"}
PUSH_KEYS = {"type", "endpoint", "exemptHandshake", "defaultContentType", "securitySchema", "signatureSecrets"}


def _typed(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Invalid(f"{where} must be a {kind.__name__}")
    return value


def _unknown(data: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise Invalid(f"Unknown attribute(s) in {where}: {', '.join(unknown)}")


def parse_spec(data: Any) -> webhooks.WebhookSpec:
    _unknown(_typed(data, dict, "The body"), BODY_KEYS, "the body")
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
    return webhooks.WebhookSpec(
        name=_typed(data.get("name"), str, "name"),
        queue_name=address.removeprefix("queue:"),
        qos=_typed(data.get("qos", 1), int, "qos"),
        endpoint=_typed(push.get("endpoint"), str, "pushConfig.endpoint"),
        exempt_handshake=_typed(push.get("exemptHandshake", False), bool, "pushConfig.exemptHandshake"),
        default_content_type=_typed(push.get("defaultContentType") or "", str, "pushConfig.defaultContentType"),
        security=security,
        signature_secrets=secrets,
    )


class SubscriptionListView(SapView):
    @extend_schema(tags=TAG, operation_id="webhook_subscriptions_list", summary="List the webhook subscriptions",
                   responses=responses({200: WebhookSubscriptionSerializer(many=True)}))
    def get(self, request: Request) -> Response:
        subscriptions = self.client.instance.webhooks.select_related("queue").order_by("name")
        return Response([webhooks.webhook_json(subscription) for subscription in subscriptions])

    @extend_schema(
        tags=TAG, operation_id="webhook_subscription_create", request=WebhookSubscriptionCreateSerializer,
        responses=responses(
            {201: WebhookSubscriptionSerializer}, BODY_ERRORS,
            e409=OpenApiResponse(WebhookConflictSerializer, description="The name exists (SAP's error shape)"),
            e429=error("The instance has its limit of webhook subscriptions"),
        ),
    )
    def post(self, request: Request) -> Response:
        spec = parse_spec(request.data)
        try:
            subscription = webhooks.webhook_create(instance=self.client.instance, spec=spec)
        except Conflict as error:
            return Response({"error": {"code": "CONFLICT", "message": error.message}}, status=409)
        return Response(webhooks.webhook_json(subscription), status=status.HTTP_201_CREATED)


class SubscriptionView(SapView):
    @extend_schema(tags=TAG, operation_id="webhook_subscription_get", parameters=[WEBHOOK],
                   responses=responses({200: WebhookSubscriptionSerializer}, NAME_ERRORS))
    def get(self, request: Request, name: str) -> Response:
        return Response(webhooks.webhook_json(webhooks.webhook_get(instance=self.client.instance, name=name)))

    @extend_schema(tags=TAG, operation_id="webhook_subscription_delete", parameters=[WEBHOOK],
                   responses=responses({204: OpenApiResponse(description="Deleted")}, NAME_ERRORS))
    def delete(self, request: Request, name: str) -> Response:
        webhooks.webhook_delete(instance=self.client.instance, name=name)
        return Response(status=status.HTTP_204_NO_CONTENT)


class HandshakeView(SapView):
    @extend_schema(tags=TAG, operation_id="webhook_subscription_handshake", request=None, parameters=[WEBHOOK],
                   summary="Repeat the CloudEvents handshake (asynchronously)",
                   responses=responses({202: WebhookSubscriptionSerializer}, NAME_ERRORS))
    def post(self, request: Request, name: str) -> Response:
        subscription = webhooks.webhook_handshake_request(instance=self.client.instance, name=name)
        return Response(webhooks.webhook_json(subscription), status=status.HTTP_202_ACCEPTED)


class StateView(SapView):
    @extend_schema(tags=TAG, operation_id="webhook_subscription_state", request=WebhookStateSerializer,
                   parameters=[WEBHOOK], summary="Pause or resume deliveries",
                   responses=responses({200: WebhookSubscriptionSerializer}, NAME_ERRORS, BODY_ERRORS))
    def put(self, request: Request, name: str) -> Response:
        body = _typed(request.data, dict, "The body")
        _unknown(body, {"action"}, "the body")
        action = _typed(body.get("action"), str, "action")
        subscription = webhooks.webhook_set_state(instance=self.client.instance, name=name, action=action)
        return Response(webhooks.webhook_json(subscription))


class DeliveryLogView(SapView):
    """meshsite extension: the subscription's latest push attempts, newest first."""

    @extend_schema(tags=TAG, operation_id="webhook_subscription_deliveries", parameters=[WEBHOOK, LIMIT],
                   responses=responses({200: DeliveryAttemptSerializer(many=True)}, NAME_ERRORS))
    def get(self, request: Request, name: str) -> Response:
        subscription = webhooks.webhook_get(instance=self.client.instance, name=name)
        raw = request.query_params.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise Invalid("limit must be between 1 and 1000")
        attempts = subscription.attempts.order_by("-attempted_at", "-id")[: int(raw)]
        return Response([
            {
                "messageId": str(attempt.message_uuid),
                "attemptedAt": attempt.attempted_at.isoformat(),
                "succeeded": attempt.succeeded,
                "statusCode": attempt.status_code,
                "latencyMs": round(attempt.latency_ms, 2),
                "error": attempt.error or None,
                "responseExcerpt": attempt.response_excerpt or None,
            }
            for attempt in attempts
        ])
