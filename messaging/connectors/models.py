"""Connector events' tables: connector instances, what providers sent, the notifications
made of it, the poller's state, and formulas with their executions.

A notification's delivery to the callback URL is not stored here: each instance with a
callback URL owns a queue and a webhook subscription of the Event Mesh delivery engine
(messaging.connectors.delivery), so a notification is a message of that queue, its attempts
are the engine's delivery log, and one that failed for good waits in the queue's dead
message queue until it is redelivered.
"""

from __future__ import annotations

import json
import secrets

from django.db import models
from django.db.models import Q

from meshsite import secretbox
from meshsite.platform.models import ServiceInstance
from messaging.models import Queue, WebhookSubscription, not_negative, one_of

__all__ = [
    "ConnectorInstance", "ConnectorNotification", "Formula", "FormulaExecution", "FormulaInstance", "FormulaStep",
    "NotificationSource", "PollRun", "PollState", "VendorEvent", "VendorEventStatus", "ExecutionStatus",
]


def webhook_token() -> str:
    return secrets.token_urlsafe(24)


class ConnectorInstance(models.Model):
    """A connector (element) instance of an open-connectors service instance, with its events
    configuration (the contract's `event.*` keys, validated by the connectors' services)."""

    service_instance = models.ForeignKey(ServiceInstance, on_delete=models.CASCADE, related_name="connector_instances")
    name = models.CharField(max_length=200)
    element_key = models.CharField(max_length=100)
    configuration = models.JSONField(default=dict, blank=True)
    # Events may go to an Event Mesh instance of the same subaccount instead of a callback URL.
    event_mesh = models.ForeignKey(ServiceInstance, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    topic_prefix = models.CharField(max_length=150, blank=True)
    # The secret configuration keys (the signature key, provider credentials) as one JSON
    # object sealed by meshsite.secretbox: kept out of `configuration` so that no answer or
    # page shows them.
    secrets = models.TextField(blank=True)
    # The unguessable part of the instance's own vendor-webhook URL (events/<element>/<token>/).
    webhook_token = models.CharField(max_length=64, unique=True, default=webhook_token)
    # The provider account a webhook body names (Dropbox account, HubSpot portal, Salesforce
    # organization): how a body posted to events/<element>/ without a token finds its instance.
    provider_account = models.CharField(max_length=200, blank=True)
    # The delivery engine's queue and webhook subscription for the callback URL (delivery.py).
    delivery_queue = models.OneToOneField(Queue, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    delivery_webhook = models.OneToOneField(WebhookSubscription, on_delete=models.SET_NULL, null=True, blank=True,
                                            related_name="+")
    # The poller's schedule, in the database so that a changed interval needs no restart.
    next_poll_at = models.DateTimeField(null=True, blank=True)
    poll_lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["service_instance", "name"], name="connector_instance_unique_name"),
        ]
        indexes = [
            models.Index(fields=["next_poll_at"], name="connector_poll_due", condition=Q(next_poll_at__isnull=False)),
            models.Index(fields=["element_key", "provider_account"], name="connector_account",
                         condition=~Q(provider_account="")),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.element_key})"

    def events_enabled(self) -> bool:
        return self.configuration.get("event.notification.enabled") is True

    def vendor_type(self) -> str:
        return str(self.configuration.get("event.vendor.type", "webhook"))

    def callback_url(self) -> str:
        return str(self.configuration.get("event.notification.callback.url") or "")

    def secret_values(self) -> dict[str, str]:
        """The secret configuration keys that are set, unsealed."""
        return json.loads(secretbox.unseal(self.secrets)) if self.secrets else {}

    def secret(self, key: str) -> str:
        return self.secret_values().get(key, "")

    def secrets_set(self, values: dict[str, str]) -> None:
        """Seal these as the instance's secret keys (not saved here); none left: ""."""
        self.secrets = secretbox.seal(json.dumps(values)) if values else ""


class VendorEventStatus(models.TextChoices):
    RECEIVED = "received"
    PROCESSED = "processed"
    FAILED = "failed"


class VendorEvent(models.Model):
    """A provider's webhook body as it arrived, stored before it is answered; normalized later."""

    element_key = models.CharField(max_length=100)
    connector_instance = models.ForeignKey(ConnectorInstance, on_delete=models.CASCADE, null=True, blank=True,
                                           related_name="vendor_events")
    body = models.BinaryField()
    content_type = models.CharField(max_length=255, blank=True)
    received_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=VendorEventStatus.choices, default=VendorEventStatus.RECEIVED)
    reason = models.CharField(max_length=500, blank=True)
    events_count = models.IntegerField(default=0)
    processed_at = models.DateTimeField(null=True, blank=True)
    # A body posted to the account URL keeps the signature headers its element names (only
    # those), and the request URI when the signature covers it, for the instances that check
    # it when it is processed (messaging.connectors.verify). Empty for the token URL, which
    # checks in the request.
    signature_headers = models.JSONField(default=dict, blank=True)
    request_uri = models.TextField(blank=True)

    class Meta:
        constraints = [
            one_of("status", VendorEventStatus.values, prefix="vendor_event"),
            *not_negative("events_count", prefix="vendor_event"),
        ]
        indexes = [
            models.Index(fields=["received_at"], name="vendor_event_pending", condition=Q(status="received")),
            models.Index(fields=["connector_instance", "-received_at"], name="vendor_event_log"),
            models.Index(fields=["received_at"], name="vendor_event_age"),  # retention
        ]

    def __str__(self) -> str:
        return f"{self.element_key} body {self.pk} ({self.status})"


class NotificationSource(models.TextChoices):
    POLLING = "polling"
    WEBHOOK = "webhook"


class ConnectorNotification(models.Model):
    """One normalized event notification (at most 10 or 20 event objects) as it was sent."""

    connector_instance = models.ForeignKey(ConnectorInstance, on_delete=models.CASCADE, related_name="notifications")
    notification_id = models.UUIDField(unique=True)
    source = models.CharField(max_length=10, choices=NotificationSource.choices)
    vendor_event = models.ForeignKey(VendorEvent, on_delete=models.SET_NULL, null=True, blank=True,
                                     related_name="notifications")
    created_at = models.DateTimeField()
    # The exact bytes POSTed to the callback URL (and signed).
    body = models.BinaryField()
    events_count = models.IntegerField()
    # The message carrying it in the instance's delivery queue; null without a callback URL.
    message_uuid = models.UUIDField(null=True, blank=True)
    # Queues the Event Mesh topic publishes reached (one publish per event object).
    topic_deliveries = models.IntegerField(default=0)
    # Why a publish onto the bound instance's topics was refused (its topic rules, a full
    # queue); the callback URL still got the notification.
    topic_error = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [
            one_of("source", NotificationSource.values, prefix="notification"),
            *not_negative("events_count", "topic_deliveries", prefix="notification"),
        ]
        indexes = [
            models.Index(fields=["connector_instance", "-created_at"], name="notification_log"),
            models.Index(fields=["message_uuid"], name="notification_message"),
            models.Index(fields=["created_at"], name="notification_age"),  # retention
        ]

    def __str__(self) -> str:
        return f"notification {self.notification_id}"


class PollState(models.Model):
    """What the poller knows of one object type of an instance: when it last polled (what the
    date macros expand to) and which record versions it has reported (no duplicates)."""

    connector_instance = models.ForeignKey(ConnectorInstance, on_delete=models.CASCADE, related_name="poll_states")
    object_type = models.CharField(max_length=200)
    last_poll_at = models.DateTimeField(null=True, blank=True)
    # objectId -> the updated date last reported, bounded (messaging.connectors.polling).
    seen = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connector_instance", "object_type"], name="poll_state_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.connector_instance_id}/{self.object_type}"


class PollRun(models.Model):
    """One poll of one object type, for the event log: what it asked, found, or why it failed."""

    connector_instance = models.ForeignKey(ConnectorInstance, on_delete=models.CASCADE, related_name="poll_runs")
    object_type = models.CharField(max_length=200)
    started_at = models.DateTimeField()
    duration_ms = models.FloatField(default=0)
    succeeded = models.BooleanField()
    records = models.IntegerField(default=0)
    events_count = models.IntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [*not_negative("duration_ms", "records", "events_count", prefix="poll_run")]
        indexes = [
            models.Index(fields=["connector_instance", "-started_at"], name="poll_run_log"),
            models.Index(fields=["started_at"], name="poll_run_age"),  # retention
        ]

    def __str__(self) -> str:
        return f"poll {self.connector_instance_id}/{self.object_type} at {self.started_at}"


class Formula(models.Model):
    """A small workflow of an open-connectors instance: steps run once per event object."""

    service_instance = models.ForeignKey(ServiceInstance, on_delete=models.CASCADE, related_name="formulas")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    # [{"name", "type": "request"|"publish", "properties": {...}}] (messaging.connectors.formulas).
    steps = models.JSONField(default=list)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["service_instance", "name"], name="formula_unique_name")]

    def __str__(self) -> str:
        return self.name


class FormulaInstance(models.Model):
    """A formula triggered by one connector instance's events."""

    formula = models.ForeignKey(Formula, on_delete=models.CASCADE, related_name="instances")
    connector_instance = models.ForeignKey(ConnectorInstance, on_delete=models.CASCADE,
                                           related_name="formula_instances")
    name = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["formula", "name"], name="formula_instance_unique_name")]
        indexes = [models.Index(fields=["connector_instance"], name="formula_trigger",
                                condition=Q(active=True))]

    def __str__(self) -> str:
        return f"{self.formula_id}: {self.name}"


class ExecutionStatus(models.TextChoices):
    PENDING = "pending"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class FormulaExecution(models.Model):
    """One run of a formula for exactly one event object."""

    formula_instance = models.ForeignKey(FormulaInstance, on_delete=models.CASCADE, related_name="executions")
    notification = models.ForeignKey(ConnectorNotification, on_delete=models.SET_NULL, null=True, blank=True,
                                     related_name="executions")
    # The trigger: {"event": <the one event object>, "notification": {...without the other events}}.
    trigger = models.JSONField()
    status = models.CharField(max_length=10, choices=ExecutionStatus.choices, default=ExecutionStatus.PENDING)
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [
            one_of("status", ExecutionStatus.values, prefix="execution"),
            *not_negative("attempts", prefix="execution"),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], name="execution_due",
                         condition=Q(status__in=["pending", "retrying"])),
            models.Index(fields=["formula_instance", "-created_at"], name="execution_log"),
            models.Index(fields=["created_at"], name="execution_age", condition=Q(status__in=["succeeded", "failed"])),
        ]

    def __str__(self) -> str:
        return f"execution {self.pk} ({self.status})"


class FormulaStep(models.Model):
    """One step of one attempt of an execution, with its result."""

    execution = models.ForeignKey(FormulaExecution, on_delete=models.CASCADE, related_name="steps")
    attempt = models.IntegerField()
    name = models.CharField(max_length=200)
    step_type = models.CharField(max_length=20)
    started_at = models.DateTimeField()
    duration_ms = models.FloatField(default=0)
    succeeded = models.BooleanField()
    # What the step produced: {"status", "body"} of a request, {"topic", "queues"} of a publish.
    result = models.JSONField(default=dict, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [*not_negative("attempt", "duration_ms", prefix="formula_step")]

    def __str__(self) -> str:
        return f"{self.execution_id} step {self.name}"
