"""Webhook subscriptions API: `/messagingrest/v1/subscriptions` in SAP's shapes (a duplicate
name answers 409 with SAP's `{"error": {"code": "CONFLICT", ...}}` body, shaped in
meshsite/errors.py). Each view parses, calls a service or selector, and serializes."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from meshsite.errors import Invalid

from .. import selectors, services
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
from .serializers import attempt_data, webhook_action, webhook_data, webhook_spec

TAG = ["Event Mesh webhooks"]


class WebhookView(SapView):
    error_shape = "sap-webhooks"


class SubscriptionListView(WebhookView):
    @extend_schema(tags=TAG, operation_id="webhook_subscriptions_list", summary="List the webhook subscriptions",
                   responses=responses({200: WebhookSubscriptionSerializer(many=True)}))
    def get(self, request: Request) -> Response:
        return Response([webhook_data(hook) for hook in selectors.webhooks_list(instance=self.client.instance)])

    @extend_schema(
        tags=TAG, operation_id="webhook_subscription_create", request=WebhookSubscriptionCreateSerializer,
        responses=responses(
            {201: WebhookSubscriptionSerializer}, BODY_ERRORS,
            e409=OpenApiResponse(WebhookConflictSerializer, description="The name exists (SAP's error shape)"),
            e429=error("The instance has its limit of webhook subscriptions"),
        ),
    )
    def post(self, request: Request) -> Response:
        subscription = services.webhook_create(instance=self.client.instance, spec=webhook_spec(request.data))
        return Response(webhook_data(subscription), status=status.HTTP_201_CREATED)


class SubscriptionView(WebhookView):
    @extend_schema(tags=TAG, operation_id="webhook_subscription_get", parameters=[WEBHOOK],
                   responses=responses({200: WebhookSubscriptionSerializer}, NAME_ERRORS))
    def get(self, request: Request, name: str) -> Response:
        return Response(webhook_data(selectors.webhook_get(instance=self.client.instance, name=name)))

    @extend_schema(tags=TAG, operation_id="webhook_subscription_delete", parameters=[WEBHOOK],
                   responses=responses({204: OpenApiResponse(description="Deleted")}, NAME_ERRORS))
    def delete(self, request: Request, name: str) -> Response:
        services.webhook_delete(instance=self.client.instance, name=name)
        return Response(status=status.HTTP_204_NO_CONTENT)


class HandshakeView(WebhookView):
    @extend_schema(tags=TAG, operation_id="webhook_subscription_handshake", request=None, parameters=[WEBHOOK],
                   summary="Repeat the CloudEvents handshake (asynchronously)",
                   responses=responses({202: WebhookSubscriptionSerializer}, NAME_ERRORS))
    def post(self, request: Request, name: str) -> Response:
        subscription = services.webhook_handshake_request(instance=self.client.instance, name=name)
        return Response(webhook_data(subscription), status=status.HTTP_202_ACCEPTED)


class StateView(WebhookView):
    @extend_schema(tags=TAG, operation_id="webhook_subscription_state", request=WebhookStateSerializer,
                   parameters=[WEBHOOK], summary="Pause or resume deliveries",
                   responses=responses({200: WebhookSubscriptionSerializer}, NAME_ERRORS, BODY_ERRORS))
    def put(self, request: Request, name: str) -> Response:
        action = webhook_action(request.data)
        subscription = services.webhook_set_state(instance=self.client.instance, name=name, action=action)
        return Response(webhook_data(subscription))


class DeliveryLogView(WebhookView):
    """meshsite extension: the subscription's latest push attempts, newest first."""

    @extend_schema(tags=TAG, operation_id="webhook_subscription_deliveries", parameters=[WEBHOOK, LIMIT],
                   responses=responses({200: DeliveryAttemptSerializer(many=True)}, NAME_ERRORS))
    def get(self, request: Request, name: str) -> Response:
        subscription = selectors.webhook_get(instance=self.client.instance, name=name)
        raw = request.query_params.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise Invalid("limit must be between 1 and 1000")
        attempts = selectors.webhook_attempts(subscription=subscription, limit=int(raw))
        return Response([attempt_data(attempt) for attempt in attempts])
