"""Writes on the platform model: instances and service keys. Every caller (the CLI, the
cockpit, tests) goes through these, so quotas and validation hold everywhere."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model, get_refresh_token_model

from .auth import forget_cached_tokens
from .models import Entitlement, Membership, Role, Service, ServiceInstance, ServiceKey, Subaccount
from .registry import KEY_PARAMETERS, PARAMETER_VALIDATORS

DEFAULT_ENTITLEMENTS = (
    (Service.EVENT_MESH, "default", 10),
    (Service.EVENT_MESH, "standard", 1),
    (Service.PROCESS_VISIBILITY, "standard", 1),
)


class PlatformError(Exception):
    """A refused platform operation; the message is meant for the user, and `field` names
    the input it concerns (a form shows it there), if one does."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class NewServiceKey:
    key: ServiceKey
    client_secret: str  # shown once: only its hash is stored


def subaccount_default() -> Subaccount:
    subaccount, created = Subaccount.objects.get_or_create(name=settings.MESH_SUBACCOUNT)
    if created:
        for service, plan, quota in DEFAULT_ENTITLEMENTS:
            Entitlement.objects.get_or_create(
                subaccount=subaccount, service=service, plan=plan, defaults={"quota": quota}
            )
    return subaccount


@transaction.atomic
def instance_create(
    *, subaccount: Subaccount, service: str, plan: str, name: str, parameters: Any = None
) -> ServiceInstance:
    entitlement = (
        Entitlement.objects.select_for_update().filter(subaccount=subaccount, service=service, plan=plan).first()
    )
    if entitlement is None:
        raise PlatformError(f"The subaccount has no entitlement for {service}/{plan}", field="plan")
    used = ServiceInstance.objects.filter(subaccount=subaccount, service=service, plan=plan).count()
    if used >= entitlement.quota:
        raise PlatformError(f"Quota exceeded: {used} of {entitlement.quota} {service}/{plan} instances in use",
                            field="plan")
    if ServiceInstance.objects.filter(subaccount=subaccount, name=name).exists():
        raise PlatformError(f"Service instance {name!r} already exists", field="name")
    normalized = _parameters(service, plan, name, parameters)
    namespace = normalized.get("namespace", "") if service == Service.EVENT_MESH else ""
    if namespace and ServiceInstance.objects.filter(subaccount=subaccount, namespace=namespace).exists():
        raise PlatformError(f"Namespace {namespace!r} is already used by another instance", field="parameters")
    try:
        return ServiceInstance.objects.create(
            subaccount=subaccount, service=service, plan=plan, name=name,
            parameters=normalized, namespace=namespace,
        )
    except IntegrityError as error:  # a concurrent create won the race
        raise PlatformError(f"Service instance {name!r} conflicts with an existing one", field="name") from error


def instance_parameters_check(*, service: str, plan: str, name: str, parameters: Any) -> dict[str, Any]:
    """The normalized parameters instance_create would store, or PlatformError saying why not
    (the cockpit's descriptor editor asks this as the user types)."""
    return _parameters(service, plan, name, parameters)


def _parameters(service: str, plan: str, name: str, parameters: Any) -> dict[str, Any]:
    if not name or len(name) > 100:
        raise PlatformError("Instance name must be 1 to 100 characters", field="name")
    validator = PARAMETER_VALIDATORS.get((service, plan))
    if validator is None:
        if parameters not in (None, {}):
            raise PlatformError(f"{service}/{plan} takes no parameters", field="parameters")
        return {}
    try:
        return validator(parameters, name)
    except ValueError as error:
        raise PlatformError(str(error), field="parameters") from None


@transaction.atomic
def entitlement_put(*, subaccount: Subaccount, service: str, plan: str, quota: int) -> tuple[Entitlement, bool]:
    """Create the entitlement or set its quota. Returns (entitlement, created).

    A quota below the instances already using the plan is refused, as BTP refuses it: those
    instances would otherwise exist beyond what the subaccount is entitled to.
    """
    if service not in Service.values:
        raise PlatformError(f"Unknown service {service!r}", field="service")
    if not plan or len(plan) > 40:
        raise PlatformError("Plan must be 1 to 40 characters", field="plan")
    if quota < 0:
        raise PlatformError("Quota must be 0 or more", field="quota")
    entitlement, created = Entitlement.objects.select_for_update().get_or_create(
        subaccount=subaccount, service=service, plan=plan, defaults={"quota": quota}
    )
    used = ServiceInstance.objects.filter(subaccount=subaccount, service=service, plan=plan).count()
    if quota < used:
        raise PlatformError(f"{used} {service}/{plan} instances are in use; the quota cannot be lower",
                            field="quota")
    if not created and entitlement.quota != quota:
        entitlement.quota = quota
        entitlement.save(update_fields=["quota"])
    return entitlement, created


@transaction.atomic
def entitlement_delete(*, entitlement: Entitlement) -> None:
    locked = Entitlement.objects.select_for_update().get(pk=entitlement.pk)
    used = ServiceInstance.objects.filter(
        subaccount_id=locked.subaccount_id, service=locked.service, plan=locked.plan
    ).count()
    if used:
        raise PlatformError(f"{used} {locked.service}/{locked.plan} instances still use this entitlement")
    locked.delete()


@transaction.atomic
def instance_delete(*, instance: ServiceInstance) -> None:
    if instance.keys.exists():
        raise PlatformError(
            f"Service instance {instance.name!r} still has service keys; delete them first"
        )
    instance.delete()


@transaction.atomic
def service_key_create(*, instance: ServiceInstance, name: str, parameters: Any = None) -> NewServiceKey:
    """A new key; `parameters` are the service's own (Process Visibility: the roles it grants)."""
    if not name or len(name) > 100:
        raise PlatformError("Service key name must be 1 to 100 characters", field="name")
    if instance.keys.filter(name=name).exists():
        raise PlatformError(f"Service key {name!r} already exists for {instance.name!r}", field="name")
    hooks = KEY_PARAMETERS.get(instance.service)
    if hooks is None and parameters not in (None, {}):
        raise PlatformError(f"{instance.service} service keys take no parameters", field="parameters")
    try:
        normalized = hooks[0](parameters) if hooks else {}
    except ValueError as error:
        raise PlatformError(str(error), field="parameters") from None
    secret = secrets.token_urlsafe(32)
    application_model = get_application_model()
    application = application_model.objects.create(
        name=f"{instance.name}/{name}",
        client_id=f"sb-{instance.id.hex[:12]}-{secrets.token_hex(8)}",
        client_secret=secret,  # hashed by django-oauth-toolkit on save
        client_type=application_model.CLIENT_CONFIDENTIAL,
        authorization_grant_type=application_model.GRANT_CLIENT_CREDENTIALS,
        skip_authorization=True,
    )
    key = ServiceKey.objects.create(instance=instance, name=name, application=application)
    if hooks:
        hooks[1](key, normalized)
    return NewServiceKey(key=key, client_secret=secret)


@transaction.atomic
def service_key_rotate(*, key: ServiceKey) -> NewServiceKey:
    """A new client secret for the key; the old one, and every token issued with it, stop
    working at once (here, and in other processes once their token cache entries age out)."""
    secret = secrets.token_urlsafe(32)
    application = type(key.application).objects.select_for_update().get(pk=key.application_id)
    application.client_secret = secret  # hashed by django-oauth-toolkit on save
    application.save(update_fields=["client_secret"])
    get_access_token_model().objects.filter(application=application).delete()
    forget_cached_tokens()
    transaction.on_commit(forget_cached_tokens)
    key.application = application
    return NewServiceKey(key=key, client_secret=secret)


@transaction.atomic
def membership_put(*, subaccount: Subaccount, user_id: int, role: str) -> Membership:
    if role not in Role.values:
        raise PlatformError(f"Unknown role {role!r}; one of {', '.join(Role.values)}", field="role")
    membership, _ = Membership.objects.update_or_create(
        subaccount=subaccount, user_id=user_id, defaults={"role": role}
    )
    return membership


@transaction.atomic
def service_key_delete(*, key: ServiceKey) -> None:
    # Deleting the application deletes its tokens too: the key stops working at once here,
    # and in other processes once their token cache entries age out.
    key.application.delete()
    forget_cached_tokens()
    transaction.on_commit(forget_cached_tokens)  # and again, should a request re-cache it meanwhile


def access_tokens_expired_delete(*, batch_size: int = 10_000) -> int:
    """Delete expired access tokens that no refresh token holds, oldest first, one batch per
    transaction; returns how many. The token endpoint issues a row per token (1,000/s is the
    goal), so a sweep must not hold locks for long: each batch is a short DELETE of its own.
    Oldest by id, which grows with issue time: with one lifetime for every token the expired
    rows sit at the start of the primary key, where a batch finds them. django-oauth-toolkit's
    clear_expired then finds none left, and clears its other tables as before."""
    token_table = get_access_token_model()._meta.db_table
    refresh_table = get_refresh_token_model()._meta.db_table
    sql = (f"DELETE FROM {token_table} WHERE id IN (SELECT t.id FROM {token_table} t WHERE t.expires < %s "
           f"AND NOT EXISTS (SELECT 1 FROM {refresh_table} r WHERE r.access_token_id = t.id) ORDER BY t.id LIMIT %s)")
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [timezone.now(), batch_size])
            count = cursor.rowcount
        deleted += count
        if count < batch_size:
            return deleted


@transaction.atomic
def membership_delete(*, membership: Membership) -> None:
    membership.delete()
