"""Connector instances and their events configuration: the writes of the instance API.

Every configuration key of the contract is checked here, once, whoever writes it (API,
cockpit, CLI); an error names the key it is about. The callback URL goes through the
webhook engine's SSRF guard without resolving it (a name may resolve differently at delivery
time, where the guard checks again), so only IP literals and malformed URLs are refused here.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from meshsite.errors import Conflict, Invalid, NotFound
from meshsite.platform.models import Service, ServiceInstance

from ..models import ConnectorInstance
from ..webhooks import netguard
from . import credentials
from .delivery import delivery_remove, delivery_sync
from .elements import ELEMENTS
from .verify import VENDOR_SECRET

# The providers meshsite has definitions for.
ELEMENT_KEYS = frozenset(ELEMENTS)

ENABLED = "event.notification.enabled"
VENDOR_TYPE = "event.vendor.type"
CALLBACK_URL = "event.notification.callback.url"
SIGNATURE_KEY = "event.notification.signature.key"
REFRESH_INTERVAL = "event.poller.refresh_interval"
POLLER = "event.poller.configuration"
KEYS = (ENABLED, VENDOR_TYPE, CALLBACK_URL, SIGNATURE_KEY, REFRESH_INTERVAL, POLLER, VENDOR_SECRET, *credentials.KEYS)
# Kept sealed, out of `configuration`, and masked in every answer and page.
SECRET_KEYS = frozenset({SIGNATURE_KEY, VENDOR_SECRET, *credentials.SECRET_KEYS})

VENDOR_TYPES = {"polling": "polling", "webhook": "webhook", "webhooks": "webhook"}
DATE_FIELDS = ("updatedDateField", "updatedDateFormat", "createdDateField", "createdDateFormat", "timezone")
POLLER_FIELDS = frozenset({"url", "idField", "datesConfiguration", "createdCheckTolerance", "pageSize",
                           "pollDelay", "filterByUpdatedDate", "filterByCurrentDate"})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _callback_url(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{CALLBACK_URL} must be a string")
    try:
        netguard.check_url_when_saved(value)
    except ValueError as error:  # InvalidURL, BlockedAddress
        raise Invalid(f"{CALLBACK_URL}: {error}") from None
    return value


def _object_type(name: str, spec: Any) -> dict[str, Any]:
    where = f"{POLLER}.{name}"
    if not isinstance(spec, dict):
        raise Invalid(f"{where} must be an object")
    unknown = sorted(set(spec) - POLLER_FIELDS)
    if unknown:
        raise Invalid(f"{where}.{unknown[0]} is not a poller configuration field")
    if not isinstance(spec.get("url"), str) or not spec["url"]:
        raise Invalid(f"{where}.url must be a non-empty string")
    if "idField" in spec and not isinstance(spec["idField"], str):
        raise Invalid(f"{where}.idField must be a string")
    dates = spec.get("datesConfiguration", {})
    if not isinstance(dates, dict):
        raise Invalid(f"{where}.datesConfiguration must be an object")
    for field, value in dates.items():
        if field not in DATE_FIELDS:
            raise Invalid(f"{where}.datesConfiguration.{field} is not a dates configuration field")
        if not isinstance(value, str):
            raise Invalid(f"{where}.datesConfiguration.{field} must be a string")
    for field in ("createdCheckTolerance", "pollDelay"):
        if field in spec and (not _is_int(spec[field]) or spec[field] < 0):
            raise Invalid(f"{where}.{field} must be a whole number of seconds, at least 0")
    if "pageSize" in spec and (not _is_int(spec["pageSize"]) or not 1 <= spec["pageSize"] <= 1000):
        raise Invalid(f"{where}.pageSize must be between 1 and 1000")
    for field in ("filterByUpdatedDate", "filterByCurrentDate"):
        if field in spec and not isinstance(spec[field], bool):
            raise Invalid(f"{where}.{field} must be a boolean")
    return spec


def configuration_value(key: str, value: Any) -> Any:
    """The stored form of one configuration value, or Invalid naming the key."""
    if key == ENABLED:
        if not isinstance(value, bool):
            raise Invalid(f"{ENABLED} must be a boolean")
        return value
    if key == VENDOR_TYPE:
        if value not in VENDOR_TYPES:
            raise Invalid(f"{VENDOR_TYPE} must be polling or webhook")
        return VENDOR_TYPES[value]
    if key == CALLBACK_URL:
        return _callback_url(value)
    if key in (SIGNATURE_KEY, VENDOR_SECRET):
        if not isinstance(value, str) or len(value) > 256:
            raise Invalid(f"{key} must be a string of at most 256 characters", extra={"key": key})
        return value
    if key == REFRESH_INTERVAL:
        if not _is_int(value) or value < 1:
            raise Invalid(f"{REFRESH_INTERVAL} must be at least 1 minute")
        return value
    if key == POLLER:
        if not isinstance(value, dict):
            raise Invalid(f"{POLLER} must be an object of object types")
        return {str(name): _object_type(str(name), spec) for name, spec in value.items()}
    if key in credentials.KEYS:
        return credentials.value_check(key, value)
    raise Invalid(f"{key} is not a configuration key", extra={"key": key})


def _set_after(checked: dict[str, Any], stored: Collection[str]) -> set[str]:
    """The keys with a value once `checked` is saved over the `stored` secret keys: the mask
    keeps a secret, "" removes one (and leaves a plain key without a value)."""
    given = {key for key, value in checked.items() if value != "" and not (value == MASK and key in SECRET_KEYS)}
    return given | {key for key in stored if checked.get(key) != ""}


def configuration_check(configuration: Any, *, event_mesh: ServiceInstance | None, element_key: str,
                        stored: Collection[str] = ()) -> dict[str, Any]:
    """The whole configuration normalized, with the rules between keys; `stored` names the
    secret keys the instance holds already."""
    if not isinstance(configuration, dict):
        raise Invalid("configuration must be an object")
    checked = {key: configuration_value(key, value) for key, value in configuration.items()}
    credentials.keys_check(element_key, _set_after(checked, stored))
    if checked.get(ENABLED) is True and not checked.get(CALLBACK_URL) and event_mesh is None:
        raise Invalid(f"{ENABLED} requires {CALLBACK_URL} or a bound Event Mesh instance")
    if checked.get(VENDOR_TYPE) == "polling":
        if REFRESH_INTERVAL not in checked:
            raise Invalid(f"{REFRESH_INTERVAL} is required when {VENDOR_TYPE} is polling")
        if not checked.get(POLLER):
            raise Invalid(f"{POLLER} is required when {VENDOR_TYPE} is polling")
    return checked


def _element_key(value: Any) -> str:
    if value not in ELEMENT_KEYS:
        raise Invalid(f"element.key must be one of {', '.join(sorted(ELEMENT_KEYS))}")
    return str(value)


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise Invalid("name must be 1 to 200 characters")
    return value


def _provider_account(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 200:
        raise Invalid("providerAccount must be a string of at most 200 characters")
    return value


def _topic_prefix(value: Any) -> str:
    # Its '/'-separated segments go into topics: the same alphabet as topic names.
    if not isinstance(value, str) or len(value) > 150 or not re.fullmatch(r"[A-Za-z0-9_.\-/]*", value):
        raise Invalid("topicPrefix must be at most 150 characters of A-Z a-z 0-9 - _ . /")
    return value.strip("/")


def _event_mesh(owner: ServiceInstance, event_mesh: ServiceInstance | None) -> ServiceInstance | None:
    if event_mesh is None:
        return None
    if event_mesh.service != Service.EVENT_MESH or event_mesh.subaccount_id != owner.subaccount_id:
        raise Invalid("eventMesh must be an Event Mesh instance of the same subaccount")
    return event_mesh


# What answers show for a secret key; sent back unchanged (read, modify, write) it keeps the value.
MASK = "********"


def _seal_secrets(instance: ConnectorInstance) -> None:
    """Move new values of secret keys out of the configuration into the sealed column: the
    mask keeps a value, "" removes it. `_write` calls it with the stored secrets read under
    the row's lock (credentials.py takes the same lock to store refreshed tokens)."""
    given = {key: instance.configuration.pop(key) for key in SECRET_KEYS if key in instance.configuration}
    if not given:
        return
    kept = instance.secret_values()
    for key, value in given.items():
        if value == MASK:
            continue
        if value:
            kept[key] = value
        else:
            kept.pop(key, None)
    instance.secrets_set(kept)


def shown_configuration(instance: ConnectorInstance) -> dict[str, Any]:
    """The configuration as answers and pages show it: each secret key that is set, masked."""
    shown = dict(instance.configuration)
    shown.update(dict.fromkeys(instance.secret_values(), MASK))
    return shown


# Never written by a save of an instance: its lease is the poller's.
_NOT_WRITTEN = frozenset({"id", "poll_lease_until", "created_at"})


def _schedule(instance: ConnectorInstance, scheduled: datetime | None, *, reschedule: bool) -> datetime | None:
    """When the instance polls next: a new or changed configuration makes a polling
    instance's poll due now, so a new refresh interval (or poller configuration, or
    credentials) takes effect at the scheduler's next tick, without a restart; a rename
    leaves the schedule as it is."""
    if not (instance.events_enabled() and instance.vendor_type() == "polling"):
        return None
    return timezone.now() if reschedule or scheduled is None else scheduled


def _write(instance: ConnectorInstance, *, reschedule: bool) -> None:
    if instance.pk is None:
        _seal_secrets(instance)
        instance.next_poll_at = _schedule(instance, None, reschedule=True)
        instance.save()
        return
    # Locked and read again: the poller may have rotated the provider's tokens (secrets) or
    # moved the schedule since `instance` was read; those stay unless this save changes them.
    stored = ConnectorInstance.objects.select_for_update().only("secrets", "next_poll_at").filter(
        pk=instance.pk).first()
    if stored is None:
        raise NotFound("No such connector instance")
    instance.secrets = stored.secrets
    _seal_secrets(instance)
    instance.next_poll_at = _schedule(instance, stored.next_poll_at, reschedule=reschedule)
    fields = [f.name for f in ConnectorInstance._meta.concrete_fields if f.name not in _NOT_WRITTEN]
    instance.save(update_fields=fields)


def _save(instance: ConnectorInstance, *, reschedule: bool = True) -> ConnectorInstance:
    try:
        with transaction.atomic():
            with transaction.atomic():
                _write(instance, reschedule=reschedule)
            delivery_sync(instance=instance)
    except IntegrityError:  # the unique name, taken concurrently or already
        raise Conflict(f"A connector instance named {instance.name!r} already exists") from None
    return instance


def connector_instance_create(
    *, service_instance: ServiceInstance, name: str, element_key: str, configuration: dict[str, Any] | None = None,
    event_mesh: ServiceInstance | None = None, topic_prefix: str = "", provider_account: str = "",
    provider_code: Any = None,
) -> ConnectorInstance:
    """A new instance; with `provider_code` (an OAuth2 authorization code) the provider's
    tokens are fetched once everything else is checked, and stored sealed."""
    bound = _event_mesh(service_instance, event_mesh)
    element_key = _element_key(element_key)
    instance = ConnectorInstance(
        service_instance=service_instance, name=_name(name), element_key=element_key,
        configuration=configuration_check(configuration or {}, event_mesh=bound, element_key=element_key),
        event_mesh=bound,
        topic_prefix=_topic_prefix(topic_prefix), provider_account=_provider_account(provider_account),
    )
    if provider_code is not None:
        # A code is good once: a name that is taken must not spend it. (A name taken between
        # here and the save still does: the 409 then asks for a new code.)
        if ConnectorInstance.objects.filter(service_instance=service_instance, name=instance.name).exists():
            raise Conflict(f"A connector instance named {instance.name!r} already exists")
        instance.configuration.update(credentials.code_exchange(
            element_key=element_key, configuration=instance.configuration, code=provider_code))
    return _save(instance)


_UNSET: Any = object()


def connector_instance_update(
    *, instance: ConnectorInstance, name: str = _UNSET, element_key: str = _UNSET,
    configuration: dict[str, Any] = _UNSET, event_mesh: ServiceInstance | None = _UNSET, topic_prefix: str = _UNSET,
    provider_account: str = _UNSET,
) -> ConnectorInstance:
    """Change any fields given; `configuration` is merged into the stored one, key by key.
    Everything is checked before `instance` is touched, so a refused update leaves it as it was."""
    changes: dict[str, Any] = {}
    if name is not _UNSET:
        changes["name"] = _name(name)
    if element_key is not _UNSET:
        changes["element_key"] = _element_key(element_key)
    bound = instance.event_mesh
    if event_mesh is not _UNSET:
        bound = changes["event_mesh"] = _event_mesh(instance.service_instance, event_mesh)
    if topic_prefix is not _UNSET:
        changes["topic_prefix"] = _topic_prefix(topic_prefix)
    if provider_account is not _UNSET:
        changes["provider_account"] = _provider_account(provider_account)
    merged = dict(instance.configuration)
    if configuration is not _UNSET:
        if not isinstance(configuration, dict):
            raise Invalid("configuration must be an object")
        merged.update(configuration)
    changes["configuration"] = configuration_check(
        merged, event_mesh=bound, element_key=changes.get("element_key", instance.element_key),
        stored=instance.secret_values().keys())
    for field, value in changes.items():
        setattr(instance, field, value)
    return _save(instance, reschedule=configuration is not _UNSET)


def connector_configuration_set(*, instance: ConnectorInstance, key: str, value: Any) -> ConnectorInstance:
    if key not in KEYS:
        raise Invalid(f"{key} is not a configuration key", extra={"key": key})
    return connector_instance_update(instance=instance, configuration={key: value})


def connector_instance_delete(*, instance: ConnectorInstance) -> None:
    """The instance, its notifications and logs, and its delivery queues with what they hold."""
    with transaction.atomic():
        delivery_remove(instance=instance)
        instance.delete()
