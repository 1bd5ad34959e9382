"""Shared pieces of the cf-CLI-like commands: JSON on stdout, errors on stderr, non-zero
exit status on failure (CommandError does the last two)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ..models import ServiceInstance, ServiceKey
from ..services import subaccount_default


def instance_named(name: str) -> ServiceInstance:
    instance = ServiceInstance.objects.filter(subaccount=subaccount_default(), name=name).first()
    if instance is None:
        raise CommandError(f"Service instance {name!r} not found")
    return instance


def key_named(instance_name: str, key_name: str) -> ServiceKey:
    key = instance_named(instance_name).keys.select_related("application", "instance").filter(name=key_name).first()
    if key is None:
        raise CommandError(f"Service key {key_name!r} not found for {instance_name!r}")
    return key


def emit(command: BaseCommand, payload: Any) -> None:
    command.stdout.write(json.dumps(payload, indent=2))
