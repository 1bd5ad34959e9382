"""Who holds which Process Visibility role: a service key's tokens (the APIs) or a user (the
cockpit). A subaccount administrator holds every role of the subaccount's instances; anyone
else holds what was granted to them (RoleGrant)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from meshsite.platform.models import ServiceInstance
from meshsite.platform.roles import can_write

from .models import PVRole, RoleGrant

DEFAULT_KEY_ROLES = (PVRole.EVENT_SENDER,)


def key_roles(*, key_id: int) -> set[str]:
    return set(RoleGrant.objects.filter(service_key_id=key_id).values_list("role", flat=True))


def key_has_role(*, key_id: int, role: str) -> bool:
    return RoleGrant.objects.filter(service_key_id=key_id, role=role).exists()


def user_roles(*, user: AbstractBaseUser | AnonymousUser, instance: ServiceInstance) -> set[str]:
    if can_write(user=user, subaccount_id=instance.subaccount_id):
        return set(PVRole.values)
    if not user.is_authenticated:
        return set()
    return set(RoleGrant.objects.filter(instance=instance, user_id=user.pk).values_list("role", flat=True))
