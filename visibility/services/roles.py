"""Granting and revoking Process Visibility roles: to a member of the instance's subaccount
(the cockpit) or to one of the instance's service keys (its tokens, the APIs)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from meshsite.errors import Conflict, Invalid
from meshsite.platform.models import Membership, Service, ServiceInstance, ServiceKey

from ..models import PVRole, RoleGrant


@transaction.atomic
def role_grant(*, instance: ServiceInstance, role: str, user: AbstractBaseUser | None = None,
               service_key: ServiceKey | None = None) -> RoleGrant:
    """Give `role` in `instance` to exactly one of a subaccount member or an instance's key."""
    if instance.service != Service.PROCESS_VISIBILITY:
        raise Invalid("Roles are granted in a Process Visibility instance")
    if role not in PVRole.values:
        raise Invalid(f"Unknown role {role!r}; one of {', '.join(PVRole.values)}", extra={"field": "role"})
    if (user is None) == (service_key is None):
        raise Invalid("A role goes to one user or one service key")
    if service_key is not None and service_key.instance_id != instance.pk:
        raise Invalid("The service key belongs to another instance", extra={"field": "service_key"})
    if user is not None and not Membership.objects.filter(user_id=user.pk,
                                                          subaccount_id=instance.subaccount_id).exists():
        raise Invalid(f"{user.get_username()} is not a member of the instance's subaccount", extra={"field": "user"})
    try:
        with transaction.atomic():
            return RoleGrant.objects.create(instance=instance, role=role, user_id=getattr(user, "pk", None),
                                            service_key=service_key)
    except IntegrityError:
        raise Conflict(f"{user.get_username() if user else service_key} already holds {role}") from None


@transaction.atomic
def role_revoke(*, grant: RoleGrant) -> None:
    RoleGrant.objects.filter(pk=grant.pk).delete()
