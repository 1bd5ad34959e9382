"""Queues, their topic subscriptions, and the messages they hold.

PostgreSQL is the truth for every message and its delivery state. A message row belongs to
one queue (a topic publish writes one row per matching queue); consumers claim rows with
SELECT ... FOR UPDATE SKIP LOCKED, and a qos-1 claim is a lock with an expiry rather than a
separate table, so an abandoned claim needs no cleanup to become available again.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from meshsite.platform.models import ServiceInstance, Subaccount

from . import names


class AccessType(models.TextChoices):
    EXCLUSIVE = "EXCLUSIVE"
    NON_EXCLUSIVE = "NON_EXCLUSIVE"


NOT_NEGATIVE = [MinValueValidator(0)]
# A redelivery delay longer than a day would look like a lost message; it also keeps
# base * 2^30 within a 64-bit integer (messaging.store.rules.redelivery_at_sql).
MAX_REDELIVERY_DELAY_MS = 86_400_000
REDELIVERY_DELAY = [MinValueValidator(0), MaxValueValidator(MAX_REDELIVERY_DELAY_MS)]


def not_negative(*fields: str, prefix: str) -> list[models.CheckConstraint]:
    """One CHECK per column, named after it, so a violation says which value was impossible."""
    return [
        models.CheckConstraint(condition=Q(**{f"{field}__gte": 0}), name=f"{prefix}_{field}_not_negative")
        for field in fields
    ]


def one_of(field: str, values: list[str] | list[int], *, prefix: str) -> models.CheckConstraint:
    return models.CheckConstraint(condition=Q(**{f"{field}__in": values}), name=f"{prefix}_{field}_valid")


class Queue(models.Model):
    instance = models.ForeignKey(ServiceInstance, on_delete=models.CASCADE, related_name="queues")
    name = models.CharField(max_length=names.MAX_NAME_LENGTH)
    access_type = models.CharField(max_length=16, choices=AccessType.choices, default=AccessType.NON_EXCLUSIVE)
    # For every limit, 0 means "no limit" (SAP's convention).
    max_queue_size_in_bytes = models.BigIntegerField(default=0, validators=NOT_NEGATIVE)
    max_queue_message_count = models.BigIntegerField(default=0, validators=NOT_NEGATIVE)
    max_message_size_in_bytes = models.BigIntegerField(default=0, validators=NOT_NEGATIVE)
    respect_ttl = models.BooleanField(default=False)
    max_redelivery_count = models.IntegerField(default=0, validators=NOT_NEGATIVE)
    dead_msg_queue = models.CharField(max_length=names.MAX_NAME_LENGTH, null=True, blank=True)
    max_delivered_unacked_msgs_per_flow = models.IntegerField(default=10000, validators=NOT_NEGATIVE)
    # meshsite extensions: a failed delivery n waits min(base * 2^(n-1), max) ms before the
    # message is offered again (messaging.store.rules.redelivery_delay_ms); 0 disables it.
    redelivery_delay_in_ms = models.IntegerField(default=1000, validators=REDELIVERY_DELAY)
    max_redelivery_delay_in_ms = models.IntegerField(default=300_000, validators=REDELIVERY_DELAY)
    # EXCLUSIVE queues: the consumer holding the queue, until its lease runs out.
    exclusive_owner = models.CharField(max_length=100, blank=True)
    exclusive_until = models.DateTimeField(null=True, blank=True)
    # Denormalized from WebhookSubscription so a publish knows, from the row it already
    # loaded, whether to wake the delivery worker.
    has_webhooks = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # The CHECKs hold what the API's validation holds, for every writer (admin, shell, a bug).
        constraints = [
            models.UniqueConstraint(fields=["instance", "name"], name="queue_unique_name"),
            *not_negative(
                "max_queue_size_in_bytes", "max_queue_message_count", "max_message_size_in_bytes",
                "max_redelivery_count", "max_delivered_unacked_msgs_per_flow", prefix="queue",
            ),
            one_of("access_type", AccessType.values, prefix="queue"),
            *[
                models.CheckConstraint(
                    condition=Q(**{f"{field}__gte": 0, f"{field}__lte": MAX_REDELIVERY_DELAY_MS}),
                    name=f"queue_{field}_valid",
                )
                for field in ("redelivery_delay_in_ms", "max_redelivery_delay_in_ms")
            ],
        ]

    def __str__(self) -> str:
        return self.name


class Subscription(models.Model):
    """A queue's subscription to a topic pattern.

    `subaccount` and `prefix` are denormalized so that a publish finds its candidate
    subscriptions with one index lookup on (subaccount, prefix IN <prefixes of the topic>)
    instead of scanning every pattern.
    """

    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="subscriptions")
    subaccount = models.ForeignKey(Subaccount, on_delete=models.CASCADE, related_name="+")
    pattern = models.CharField(max_length=names.MAX_NAME_LENGTH)
    prefix = models.CharField(max_length=names.MAX_NAME_LENGTH)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["queue", "pattern"], name="subscription_unique_pattern")]
        indexes = [models.Index(fields=["subaccount", "prefix"], name="subscription_lookup")]

    def __str__(self) -> str:
        return f"{self.queue.name} <- {self.pattern}"

    def matches(self, topic: str) -> bool:
        return names.covers(self.pattern, topic)


class Message(models.Model):
    # No index of its own: `message_fifo` leads with queue_id and serves every lookup by queue
    # (a second one cost each publish and claim an index write and misled batch claims).
    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="messages", db_index=False)
    uuid = models.UUIDField(default=uuid.uuid4, editable=False)
    payload = models.BinaryField()
    size = models.IntegerField()
    content_type = models.CharField(max_length=255)
    # Where it was published: "topic:<t>" or "queue:<q>" (the push header x-address).
    address = models.CharField(max_length=names.MAX_NAME_LENGTH + 6)
    qos = models.SmallIntegerField(default=1)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    # The publisher's own properties (AMQP message id, correlation id, subject, reply-to,
    # application properties) as a JSON object, "" for none (every REST publish):
    # messaging.amqp.codec. A database default, so that every writer may leave it out.
    properties = models.TextField(blank=True, default="", db_default="")
    delivery_count = models.IntegerField(default=0)
    # A claim: set while a qos-1 consumer holds the message (its lock end, what an ack checks).
    locked_until = models.DateTimeField(null=True, blank=True)
    # When a claim given up (lock run out, or given back as failed) may be taken again: the
    # lock end plus the queue's redelivery delay, or a webhook's own retry time. Never
    # before `locked_until`; NULL: never claimed, or given back at once.
    available_at = models.DateTimeField(null=True, blank=True)
    claim_id = models.UUIDField(null=True, blank=True)
    claimed_by = models.CharField(max_length=100, blank=True)
    # Set when the message was moved to a dead message queue: why, and from where.
    death_reason = models.CharField(max_length=200, blank=True)
    dead_from = models.CharField(max_length=names.MAX_NAME_LENGTH, blank=True)

    class Meta:
        constraints = [
            *not_negative("size", "delivery_count", prefix="message"),
            one_of("qos", [0, 1], prefix="message"),
            # Unique (every claim takes a fresh id) so that the planner knows an acknowledgement's
            # `claim_id = %s` finds one row whatever the statistics say: as a plain index on a
            # table not yet analyzed it was ANDed with a bitmap of the whole queue from another
            # index, 1.5 ms per ack at 20,000 messages (docs/performance.md).
            models.UniqueConstraint(fields=["claim_id"], name="message_claim", condition=Q(claim_id__isnull=False)),
        ]
        indexes = [
            models.Index(fields=["queue", "id"], name="message_fifo"),
            models.Index(
                fields=["queue", "claimed_by"], name="message_claimed_by", condition=Q(locked_until__isnull=False)
            ),
            # The sweep's batches (messaging.store.cleanup): a queue's expired messages by
            # expiry, and the redelivered ones (the only ones that can be exhausted: every
            # maxRedeliveryCount >= 1), without reading the rest of a large queue.
            models.Index(fields=["queue", "expires_at"], name="message_expiry"),
            models.Index(fields=["queue", "id"], name="message_redelivered", condition=Q(delivery_count__gt=1)),
        ]

    def __str__(self) -> str:
        return f"{self.uuid} in {self.queue_id}"


class WebhookStatus(models.TextChoices):
    ACTIVE = "Active"
    PAUSED = "Paused"


class HandshakeStatus(models.TextChoices):
    PENDING = "Pending"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    EXEMPTED = "Exempted"


HANDSHAKE_DONE = (HandshakeStatus.SUCCEEDED, HandshakeStatus.EXEMPTED)


class SignatureScheme(models.TextChoices):
    STANDARD_WEBHOOKS = "standard-webhooks"
    ELEMENTS = "elements"


class WebhookSubscription(models.Model):
    """A queue pushed to an HTTP endpoint (SAP's webhook subscription).

    `security` holds the receiver credentials with the secret part sealed
    (meshsite.secretbox): {"type": "basicAuth", "user", "password"} or {"type": "oauth2",
    "grantType", "clientId", "clientSecret", "tokenUrl"}; {} for none.
    """

    instance = models.ForeignKey(ServiceInstance, on_delete=models.CASCADE, related_name="webhooks")
    name = models.CharField(max_length=names.MAX_NAME_LENGTH)
    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="webhooks")
    qos = models.SmallIntegerField(default=1)
    endpoint = models.CharField(max_length=2048)
    exempt_handshake = models.BooleanField(default=False)
    default_content_type = models.CharField(max_length=255, blank=True)
    security = models.JSONField(default=dict, blank=True)
    # Standard Webhooks signing (meshsite extension): sealed whsec_ secrets; two while rotating.
    signing_secrets = models.JSONField(default=list, blank=True)
    # How those secrets sign: Standard Webhooks, or the connectors' Elements-Webhook-Signature
    # (messaging.webhooks.signing), which connector instances' subscriptions use.
    signature_scheme = models.CharField(max_length=20, choices=SignatureScheme.choices,
                                        default=SignatureScheme.STANDARD_WEBHOOKS)
    status = models.CharField(max_length=10, choices=WebhookStatus.choices, default=WebhookStatus.ACTIVE)
    handshake_status = models.CharField(
        max_length=10, choices=HandshakeStatus.choices, default=HandshakeStatus.PENDING
    )
    handshake_reason = models.CharField(max_length=500, blank=True)
    last_successful_delivery = models.DateTimeField(null=True, blank=True)
    last_failed_delivery = models.DateTimeField(null=True, blank=True)
    last_failed_delivery_reason = models.CharField(max_length=500, blank=True)
    # Endpoint health: the retry gate and how long the endpoint has been failing.
    consecutive_failures = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    failing_since = models.DateTimeField(null=True, blank=True)
    # A lease: at most one worker pushes for a subscription at a time, so pushes keep the
    # queue's order; a killed worker's lease simply runs out.
    runner_until = models.DateTimeField(null=True, blank=True)
    # Which run holds the lease: every renewal and the release are fenced on it, so a run
    # that outlived its lease (and lost it to another) can change nothing.
    runner = models.UUIDField(null=True, blank=True)
    # Set by a resume while the backlog is still going out at the slow-start rate.
    resumed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["instance", "name"], name="webhook_unique_name"),
            one_of("qos", [0, 1], prefix="webhook"),
            *not_negative("consecutive_failures", prefix="webhook"),
            one_of("status", WebhookStatus.values, prefix="webhook"),
            one_of("handshake_status", HandshakeStatus.values, prefix="webhook"),
            one_of("signature_scheme", SignatureScheme.values, prefix="webhook"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def may_deliver(self) -> bool:
        return self.status == WebhookStatus.ACTIVE and self.handshake_status in HANDSHAKE_DONE

    @staticmethod
    def deliverable() -> Q:
        """The same rule as `may_deliver`, for queries."""
        return Q(status=WebhookStatus.ACTIVE, handshake_status__in=HANDSHAKE_DONE)

    # The rule once more, as SQL with its parameters, for the delivery engine's precompiled
    # statements (every publish and every run use them; the ORM would compile them each time).
    DELIVERABLE_SQL = "status = %s AND handshake_status IN (%s, %s)"
    DELIVERABLE_PARAMS = (WebhookStatus.ACTIVE.value, *(status.value for status in HANDSHAKE_DONE))


class DeliveryAttempt(models.Model):
    """One push to a webhook endpoint, kept for the delivery log."""

    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="attempts")
    message_uuid = models.UUIDField()
    attempted_at = models.DateTimeField()
    succeeded = models.BooleanField()
    status_code = models.IntegerField(null=True, blank=True)
    latency_ms = models.FloatField(default=0)
    error = models.CharField(max_length=500, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [*not_negative("latency_ms", prefix="attempt")]
        indexes = [
            models.Index(fields=["subscription", "-attempted_at"], name="attempt_log"),
            models.Index(fields=["attempted_at"], name="attempt_age"),  # retention pruning
        ]

    def __str__(self) -> str:
        return f"{self.message_uuid} -> {self.status_code or self.error}"


class Topology(models.Model):
    """One row whose version goes up after every committed change to queues, topic
    subscriptions or webhook subscriptions (messaging.topology), so that processes that
    cache them (the hot path's catalog) can tell, with one indexed read, that theirs is stale."""

    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"topology v{self.version}"


class ServerProcess(models.Model):
    """A server process holding WebSocket connections, alive while `seen_at` is recent: its
    connections count towards their instance's quota only while it lives, so a process
    that dies (killed, its machine gone) frees its quota by itself (messaging.live.sockets)."""

    id = models.CharField(primary_key=True, max_length=32)
    host = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.host or 'process'} {self.id[:8]}"


class Connection(models.Model):
    """An open WebSocket connection (AMQP or JSON) of a service instance."""

    id = models.UUIDField(primary_key=True)
    instance = models.ForeignKey(ServiceInstance, on_delete=models.CASCADE, related_name="connections")
    process = models.ForeignKey(ServerProcess, on_delete=models.CASCADE, related_name="connections")
    protocol = models.CharField(max_length=8)
    opened_at = models.DateTimeField()
    # The ids of the queues it consumes now (AMQP receiver links, JSON queue subscriptions),
    # written when they change: the cockpit's "consumers connected" per queue.
    queue_ids = models.JSONField(default=list, blank=True)

    class Meta:
        indexes = [models.Index(fields=["instance", "process"], name="connection_instance")]

    def __str__(self) -> str:
        return f"{self.protocol} {self.id}"


class WsTicket(models.Model):
    """A single-use, short-lived pass onto the JSON WebSocket for a logged-in cockpit user
    (a browser cannot set an Authorization header on a WebSocket). Only the SHA-256 of the
    ticket is kept, as for tokens."""

    checksum = models.CharField(max_length=64, unique=True)
    instance = models.ForeignKey(ServiceInstance, on_delete=models.CASCADE, related_name="ws_tickets")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ws_tickets")
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"ticket for {self.user_id} on {self.instance_id}"

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at <= now


class _QueueCounts(models.Model):
    """The six counts the meter keeps (messaging.metrics.meter.KINDS), per queue."""

    published = models.BigIntegerField(default=0)
    consumed = models.BigIntegerField(default=0)
    acknowledged = models.BigIntegerField(default=0)
    delivered = models.BigIntegerField(default=0)  # webhook pushes the receiver accepted
    delivery_failed = models.BigIntegerField(default=0)  # webhook attempts that failed
    dead_lettered = models.BigIntegerField(default=0)  # moved to the dead message queue, or dropped

    class Meta:
        abstract = True


class QueueMinute(_QueueCounts):
    """What happened to a queue in one minute (UTC, truncated), for the cockpit's rates.
    Monitoring data, not messages: written by the meter's flush, deleted after
    MESH_METER_RETENTION_HOURS by the sweep."""

    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="+", db_index=False)
    minute = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["queue", "minute"], name="queue_minute_unique")]
        indexes = [models.Index(fields=["minute"], name="queue_minute_age")]  # retention

    def __str__(self) -> str:
        return f"{self.queue_id} @ {self.minute:%Y-%m-%d %H:%M}"


class QueueCounter(_QueueCounts):
    """A queue's counts since it was created, upserted by the same flush as its minutes: what
    /metrics exports, so that Prometheus counters stay monotonic when old minutes go."""

    queue = models.OneToOneField(Queue, on_delete=models.CASCADE, primary_key=True, related_name="+")

    def __str__(self) -> str:
        return f"counters of {self.queue_id}"


# Connector events keep their models in their sub-package; Django finds them through here.
from messaging.connectors.models import *  # noqa: E402, F403
