"""WebSocket tickets: how a logged-in cockpit user's browser opens the JSON WebSocket.

A browser's WebSocket cannot carry an Authorization header, and a session cookie on an
upgrade is what cross-site WebSocket hijacking abuses. So the page asks for a ticket over
an ordinary CSRF-protected request and opens the socket with it: the ticket is random, good
for MESH_WS_TICKET_SECONDS and for one connection, bound to one instance, and only its
SHA-256 is stored.

Who may have a ticket: an administrator of the instance's subaccount (meshsite.platform.roles;
a viewer may not, since consuming and publishing change the queues), for as long as they stay one.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from meshsite.errors import Forbidden, NotFound
from meshsite.platform.models import Service, ServiceInstance
from meshsite.platform.roles import can_write, role_of

from ..models import WsTicket


@dataclass(frozen=True)
class Ticket:
    raw: str
    expires_at: datetime


def _checksum(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def ws_ticket_issue(*, user: AbstractBaseUser | AnonymousUser, instance_id: str) -> Ticket:
    if not (user.is_authenticated and user.is_active):
        raise Forbidden("WebSocket tickets are issued to logged-in users")
    try:
        instance = ServiceInstance.objects.get(pk=instance_id, service=Service.EVENT_MESH)
    except (ServiceInstance.DoesNotExist, ValidationError, ValueError, TypeError):  # no such id, or no id at all
        raise NotFound("No Event Mesh instance with this id") from None
    # Someone with no role in the subaccount learns nothing of the instance: the same 404.
    if role_of(user=user, subaccount_id=instance.subaccount_id) is None:
        raise NotFound("No Event Mesh instance with this id")
    if not can_write(user=user, subaccount_id=instance.subaccount_id):
        raise Forbidden("WebSocket tickets are issued to administrators of the instance's subaccount")
    now = timezone.now()
    raw = secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=settings.MESH_WS_TICKET_SECONDS)
    WsTicket.objects.filter(expires_at__lte=now).delete()  # the few left unused
    WsTicket.objects.create(checksum=_checksum(raw), instance=instance, user_id=user.pk, expires_at=expires_at)
    return Ticket(raw=raw, expires_at=expires_at)


def ws_ticket_redeem(*, raw: str) -> tuple[ServiceInstance, int] | None:
    """The instance a ticket opens and its user, once: the ticket is gone whatever the answer."""
    if not raw or len(raw) > 256:
        return None
    with transaction.atomic():
        ticket = (WsTicket.objects.select_for_update().select_related("instance", "user")
                  .filter(checksum=_checksum(raw)).first())
        if ticket is None:
            return None
        ticket.delete()
    if ticket.is_expired(timezone.now()):
        return None
    if not can_write(user=ticket.user, subaccount_id=ticket.instance.subaccount_id):
        return None
    return ticket.instance, ticket.user_id


def ws_ticket_still_valid(*, user_id: int, instance_id: uuid.UUID) -> bool:
    """A ticket's connection lasts while its user stays an administrator of the instance's
    subaccount and the instance exists."""
    instance = ServiceInstance.objects.filter(pk=instance_id).first()
    user = get_user_model().objects.filter(pk=user_id).first()
    return instance is not None and user is not None and can_write(user=user, subaccount_id=instance.subaccount_id)
