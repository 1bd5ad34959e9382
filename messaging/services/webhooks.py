"""Webhook subscriptions' writes: create, delete, pause/resume, and the handshake.

A subscription names a queue of its instance and an endpoint. The endpoint (and an OAuth2
`tokenUrl`) passes the SSRF guard when the subscription is created, and again at every
connection. Receiver credentials are sealed at rest. No message is pushed before the
receiver has passed the CloudEvents handshake, unless the subscription is exempted.
The REST API, the admin and the handshake task all call these.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from meshsite import secretbox
from meshsite.errors import Conflict, Forbidden, Invalid, LimitReached, NotFound
from meshsite.platform.models import ServiceInstance

from .. import dispatch
from ..mediatype import MAX_LENGTH, is_media_type
from ..models import HandshakeStatus, Queue, WebhookStatus, WebhookSubscription
from ..names import InvalidName, validate_queue_name
from ..selectors import queue_get, rules_for, webhook_get
from ..webhooks import netguard, signing
from ..webhooks.auth import SEALED_FIELDS, own_token_url
from ..webhooks.handshake import handshake, handshake_origin

log = logging.getLogger(__name__)

SECURITY_FIELDS = {"basicAuth": ("user", "password"), "oauth2": ("grantType", "clientId", "clientSecret", "tokenUrl")}


@dataclass(frozen=True)
class WebhookSpec:
    name: str
    queue_name: str
    qos: int
    endpoint: str
    exempt_handshake: bool = False
    default_content_type: str = ""
    security: dict[str, str] = field(default_factory=dict)
    signature_secrets: list[str] = field(default_factory=list)


def _public_url(url: str, what: str) -> str:
    try:
        netguard.validate_url(url)
        parts = urlsplit(url)
        netguard.resolve_public(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    except ValueError as error:  # InvalidURL, BlockedAddress, UnresolvableHost
        raise Invalid(f"{what}: {error}") from None
    return url


def _sealed_security(security: dict[str, str]) -> dict[str, str]:
    if not security:
        return {}
    kind = security.get("type")
    if kind not in SECURITY_FIELDS:
        raise Invalid("securitySchema.type must be 'basicAuth' or 'oauth2'")
    missing = [name for name in SECURITY_FIELDS[kind] if not security.get(name)]
    if missing:
        raise Invalid(f"securitySchema ({kind}) needs {', '.join(missing)}")
    if kind == "oauth2":
        if security["grantType"] != "client_credentials":
            raise Invalid("securitySchema.grantType must be 'client_credentials'")
        if security["tokenUrl"].rstrip("/") != own_token_url():
            _public_url(security["tokenUrl"], "securitySchema.tokenUrl")
    return {
        "type": kind,
        **{
            name: secretbox.seal(security[name]) if name in SEALED_FIELDS else security[name]
            for name in SECURITY_FIELDS[kind]
        },
    }


def _sealed_signing(secrets: list[str]) -> list[str]:
    if len(secrets) > 2:
        raise Invalid("pushConfig.signatureSecrets holds at most two secrets (the new and the old while rotating)")
    try:
        return [secretbox.seal(signing.validate_secret(secret)) for secret in secrets]
    except (ValueError, TypeError) as error:
        raise Invalid(f"pushConfig.signatureSecrets: {error}") from None


def _checked(instance: ServiceInstance, spec: WebhookSpec) -> None:
    try:
        validate_queue_name(spec.name)
        validate_queue_name(spec.queue_name)
    except InvalidName as error:
        raise Invalid(str(error)) from None
    if spec.qos not in (0, 1):
        raise Invalid("qos must be 0 or 1")
    if spec.default_content_type and not is_media_type(spec.default_content_type):
        raise Invalid("pushConfig.defaultContentType must be a media type (type/subtype; name=value), at most"
                      f" {MAX_LENGTH} characters")
    if not rules_for(instance).allows("queueRules", "subscribeFilter", spec.queue_name):
        raise Forbidden(f"The instance's queue rules do not allow consuming from {spec.queue_name!r}")
    _public_url(spec.endpoint, "pushConfig.endpoint")


def webhook_create(*, instance: ServiceInstance, spec: WebhookSpec) -> WebhookSubscription:
    """A new subscription; its handshake (or, exempted, its first delivery run) starts
    after the commit. A duplicate name raises Conflict."""
    _checked(instance, spec)
    security = _sealed_security(spec.security)
    signing_secrets = _sealed_signing(spec.signature_secrets)
    with transaction.atomic():
        try:
            queue = queue_get(instance=instance, name=spec.queue_name)
        except NotFound:
            raise Invalid(f"address must name an existing queue of this instance: queue:{spec.queue_name}") from None
        if WebhookSubscription.objects.filter(instance=instance, name=spec.name).exists():
            raise Conflict(f"Subscription {spec.name} already exists")
        limit = settings.MESH_MAX_WEBHOOKS_PER_INSTANCE
        if WebhookSubscription.objects.filter(instance=instance).count() >= limit:
            raise LimitReached(f"The instance already has {limit} webhook subscriptions (the limit)")
        try:
            with transaction.atomic():
                subscription = WebhookSubscription.objects.create(
                    instance=instance, name=spec.name, queue=queue, qos=spec.qos, endpoint=spec.endpoint,
                    exempt_handshake=spec.exempt_handshake, default_content_type=spec.default_content_type,
                    security=security, signing_secrets=signing_secrets,
                    handshake_status=HandshakeStatus.EXEMPTED if spec.exempt_handshake else HandshakeStatus.PENDING,
                )
        except IntegrityError:
            raise Conflict(f"Subscription {spec.name} already exists") from None
        if not queue.has_webhooks:
            Queue.objects.filter(pk=queue.pk).update(has_webhooks=True)
        if spec.exempt_handshake:
            schedule_delivery(subscription.pk)  # the queue may already hold messages
        else:
            _schedule_handshake(subscription)
    return subscription


def webhook_delete(*, instance: ServiceInstance, name: str) -> None:
    with transaction.atomic():
        subscription = webhook_get(instance=instance, name=name)
        # Locked first: a delivery run settling meanwhile waits, instead of adding log rows
        # between the deletion of the log and of the subscription.
        WebhookSubscription.objects.select_for_update().filter(pk=subscription.pk).first()
        subscription.delete()
        queue = subscription.queue
        Queue.objects.filter(pk=queue.pk).update(has_webhooks=queue.webhooks.exists())


def webhook_set_state(*, instance: ServiceInstance, name: str, action: str) -> WebhookSubscription:
    """`pause` or `resume`; a resume starts afresh (health reset, slow start, a run woken)."""
    states = {"pause": WebhookStatus.PAUSED, "resume": WebhookStatus.ACTIVE}
    if action not in states:
        raise Invalid("action must be 'pause' or 'resume'")
    with transaction.atomic():
        subscription = webhook_get(instance=instance, name=name)
        subscription.status = states[action]
        if action == "resume":  # a fresh start; the backlog goes out in a slow start
            subscription.next_attempt_at = None
            subscription.failing_since = None
            subscription.consecutive_failures = 0
            subscription.resumed_at = timezone.now()
        subscription.save(
            update_fields=["status", "next_attempt_at", "failing_since", "consecutive_failures", "resumed_at"]
        )
        if action == "resume":
            schedule_delivery(subscription.pk)
    return subscription


def webhook_handshake_request(*, instance: ServiceInstance, name: str) -> WebhookSubscription:
    """Mark the handshake pending and run it again after the commit (exempted: unchanged)."""
    with transaction.atomic():
        subscription = webhook_get(instance=instance, name=name)
        if subscription.exempt_handshake:
            return subscription
        subscription.handshake_status = HandshakeStatus.PENDING
        subscription.handshake_reason = ""
        subscription.save(update_fields=["handshake_status", "handshake_reason"])
        _schedule_handshake(subscription)
    return subscription


def webhook_handshake_run(*, subscription_id: int) -> str:
    """Send the CloudEvents validation request and record the outcome (no transaction is
    open while the receiver is called)."""
    subscription = WebhookSubscription.objects.filter(pk=subscription_id).first()
    if subscription is None or subscription.exempt_handshake:
        return "gone"
    status, reason = handshake(subscription.endpoint, handshake_origin())
    WebhookSubscription.objects.filter(pk=subscription_id).update(
        handshake_status=status, handshake_reason=reason[:500]
    )
    if status == HandshakeStatus.SUCCEEDED:
        schedule_delivery(subscription_id)
    return status


def _schedule_handshake(subscription: WebhookSubscription) -> None:
    transaction.on_commit(lambda: dispatch.webhook_handshake(subscription.pk))


def schedule_delivery(subscription_id: int) -> None:
    def wake() -> None:
        try:
            dispatch.webhook_deliver(subscription_id)
        except Exception:  # noqa: BLE001 - the broker is only a wake-up; the sweep follows
            log.warning("could not wake delivery of webhook %s; the sweep will", subscription_id)

    transaction.on_commit(wake)
