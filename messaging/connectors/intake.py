"""Providers' webhooks: stored as they arrive, normalized afterwards.

`vendor_event_receive` is all the request does -- one INSERT -- so the provider gets its
2xx at once whatever the body holds; `vendor_event_process` (a Celery task, woken after the
commit, with the connectors' tick as the sweep for a lost wake-up) normalizes the body with
the element's definition and hands the event objects to `notifications_emit`. A body that
is not JSON, does not match the definition, or finds no instance is kept, marked failed with
the reason, so the event log shows what the provider sent and why nothing came of it.

An instance's own URL (`events/<element>/<webhook token>/`) names it with a secret; a body
posted to `events/<element>/` finds its instances through the provider account it names
(the element definition says where), matched against their `providerAccount`.

An instance with `event.vendor.secret` takes only bodies its provider signed (verify.py): on
its token URL a refused signature is a 401 and nothing is stored; at the account URL the
body keeps its signature headers, and an instance that refuses it when it is processed is
skipped, named in the body's reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from meshsite.errors import NotFound

from .. import dispatch
from ..models import ConnectorInstance, NotificationSource, VendorEvent, VendorEventStatus
from .elements import element
from .emit import TooManyNotifications, notifications_emit
from .normalize import NotNormalizable, instance_ref, normalize
from .verify import Signed, instances_split, kept_headers, request_check

log = logging.getLogger(__name__)

# A body still `received` this long after it arrived lost its wake-up; the tick starts it.
STALE_AFTER = timedelta(seconds=30)


def vendor_event_receive(*, element_key: str, token: str | None, body: bytes, content_type: str,
                         headers: Mapping[str, str] | None = None, uri: str = "") -> VendorEvent:
    """Store a provider's body for `element_key` (and the instance whose token is `token`).
    NotFound for an unknown element or token, SignatureRefused when that instance has a vendor
    secret the body is not signed with: nothing is stored for those."""
    definition = element(element_key)
    if definition is None:
        raise NotFound(f"Unknown element {element_key!r}")
    headers, now = headers or {}, timezone.now()
    instance_id, kept, kept_uri = None, {}, ""
    if token is not None:
        # The sealed secrets come in the same indexed lookup: no second query on the hot path.
        instance = ConnectorInstance.objects.only("pk", "secrets").filter(
            element_key=element_key, webhook_token=token).first()
        if instance is None:
            raise NotFound("No connector instance of this element has this events URL")
        request_check(definition, instance, Signed(body=body, headers=headers, uri=uri, received_at=now),
                      max_age=settings.MESH_CONNECTOR_SIGNATURE_MAX_AGE)
        instance_id = instance.pk
    else:  # the instances are known once the body is parsed: keep what their check needs
        kept = kept_headers(definition.signature, headers)
        kept_uri = uri if definition.signature is not None and definition.signature.needs_uri() else ""
    row = VendorEvent.objects.create(
        element_key=element_key, connector_instance_id=instance_id, body=body, content_type=content_type[:255],
        received_at=now, signature_headers=kept, request_uri=kept_uri,
    )
    transaction.on_commit(lambda: _wake(row.pk))
    return row


def _wake(vendor_event_id: int) -> None:
    try:
        dispatch.connector_vendor_event(vendor_event_id)
    except Exception:  # noqa: BLE001 - the broker is only a wake-up; the tick follows
        log.warning("could not wake processing of vendor body %s; the tick will", vendor_event_id)


def _targets(row: VendorEvent, raw: object) -> list[ConnectorInstance]:
    instances = ConnectorInstance.objects.select_related("service_instance", "event_mesh", "delivery_queue")
    if row.connector_instance_id is not None:
        return list(instances.filter(pk=row.connector_instance_id))
    definition = element(row.element_key)
    account = instance_ref(definition, raw) if definition else None
    if account is None:
        raise NotNormalizable("the body names no provider account, and was not posted to an instance's events URL")
    found = list(instances.filter(element_key=row.element_key, provider_account=account).order_by("pk"))
    if not found:
        raise NotNormalizable(f"no connector instance has provider account {account!r}")
    return found


def vendor_event_process(*, vendor_event_id: int) -> int:
    """Normalize one stored body into notifications. Returns the event objects it made."""
    with transaction.atomic():
        row = VendorEvent.objects.select_for_update(skip_locked=True).filter(
            pk=vendor_event_id, status=VendorEventStatus.RECEIVED).first()
        if row is None:  # done already, or another worker holds it
            return 0
        try:
            return _process(row)
        except (NotNormalizable, TooManyNotifications) as error:
            reason = error.reason if isinstance(error, NotNormalizable) else error.message
            _finish(row, VendorEventStatus.FAILED, reason=reason)
            return 0


def _process(row: VendorEvent) -> int:
    definition = element(row.element_key)
    if definition is None:  # an element removed since the body was stored
        raise NotNormalizable(f"element {row.element_key!r} is no longer defined")
    normalized = normalize(definition, bytes(row.body), now=row.received_at,
                           max_objects=settings.MESH_CONNECTOR_MAX_OBJECTS)
    checked = row.connector_instance_id is not None  # the token URL checked its signature
    targets = _targets(row, normalized.raw)
    accepted, refusals = (targets, []) if checked else instances_split(
        definition, targets, _signed(row), max_age=settings.MESH_CONNECTOR_SIGNATURE_MAX_AGE)
    row.connector_instance = (accepted or targets)[0]
    if not accepted:
        raise NotNormalizable("; ".join(refusals))
    enabled = [instance for instance in accepted if instance.events_enabled()]
    if not enabled:
        raise NotNormalizable("; ".join([f"events are not enabled on connector instance {accepted[0].pk}",
                                         *refusals]))
    for instance in enabled:
        with transaction.atomic():  # a refused instance (too large) leaves nothing behind
            notifications_emit(instance=instance, events=normalized.events, raw=normalized.raw,
                               source=NotificationSource.WEBHOOK, vendor_event=row)
    _finish(row, VendorEventStatus.PROCESSED, events=len(normalized.events), reason="; ".join(refusals))
    return len(normalized.events)


def _signed(row: VendorEvent) -> Signed:
    return Signed(body=bytes(row.body), headers=row.signature_headers, uri=row.request_uri,
                  received_at=row.received_at)


def _finish(row: VendorEvent, status: str, *, reason: str = "", events: int = 0) -> None:
    row.status, row.reason, row.events_count, row.processed_at = status, reason[:500], events, timezone.now()
    row.save(update_fields=["status", "reason", "events_count", "processed_at", "connector_instance"])


def vendor_events_stale_start() -> int:
    """Wake processing for bodies whose wake-up was lost (the connectors' tick)."""
    cutoff = timezone.now() - STALE_AFTER
    pending = list(VendorEvent.objects.filter(status=VendorEventStatus.RECEIVED, received_at__lte=cutoff)
                   .order_by("received_at").values_list("pk", flat=True)[:1000])
    for pk in pending:
        _wake(pk)
    return len(pending)
