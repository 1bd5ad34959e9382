"""Who may see and change what in a subaccount: the one place the cockpit, the WebSocket
tickets and the admin's service actions ask.

A subaccount the user has no role in does not exist for them (404, not 403: its name is not
theirs to learn); a viewer's write is 403. Superusers administer every subaccount.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from meshsite.errors import Forbidden, NotFound

from .models import Membership, Role, Subaccount

User = AbstractBaseUser | AnonymousUser


def role_of(*, user: User, subaccount_id: int) -> str | None:
    if not (user.is_authenticated and user.is_active):
        return None
    if getattr(user, "is_superuser", False):
        return Role.ADMINISTRATOR
    return (Membership.objects.filter(user_id=user.pk, subaccount_id=subaccount_id)
            .values_list("role", flat=True).first())


def subaccounts_of(*, user: User) -> QuerySet[Subaccount]:
    if not (user.is_authenticated and user.is_active):
        return Subaccount.objects.none()
    every = Subaccount.objects.order_by("name")
    return every if getattr(user, "is_superuser", False) else every.filter(memberships__user_id=user.pk)


def require_role(*, user: User, subaccount_id: int, write: bool) -> str:
    """The user's role, or NotFound (no role) / Forbidden (a viewer asking to write)."""
    role = role_of(user=user, subaccount_id=subaccount_id)
    if role is None:
        raise NotFound("No such subaccount")
    if write and role != Role.ADMINISTRATOR:
        raise Forbidden("Viewers of this subaccount cannot change it; ask an administrator")
    return role


def can_write(*, user: User, subaccount_id: int) -> bool:
    return role_of(user=user, subaccount_id=subaccount_id) == Role.ADMINISTRATOR
