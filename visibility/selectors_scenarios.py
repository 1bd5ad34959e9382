"""Reads for modelling and monitoring scenarios: the cockpit's pages and the scenarios API."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from meshsite.platform.models import ServiceInstance, ServiceKey, Subaccount

from .buffer import buffer_count
from .models import Event, ProcessingRun, ProcessInstance, RoleGrant, Scenario
from .scenario import BUILT_IN, problems


def scenarios_list(*, instance: ServiceInstance) -> QuerySet[Scenario]:
    return Scenario.objects.filter(instance=instance).order_by("scenario_id")


def scenario_state(scenario: Scenario) -> str:
    if scenario.active is None:
        return "draft"
    return "active-with-draft" if scenario.draft is not None else "active"


def scenario_problems(scenario: Scenario) -> list[dict[str, str]]:
    """What blocks activating the draft; nothing when there is no draft (the active version passed)."""
    if scenario.draft is None:
        return []
    return [problem.as_dict() for problem in problems(scenario.draft)]


def scenario_runs(*, scenario: Scenario, limit: int = 50) -> list[ProcessingRun]:
    return list(ProcessingRun.objects.filter(scenario=scenario).order_by("-started_at", "-pk")[:limit])


def scenario_counts(*, scenario: Scenario) -> dict[str, int]:
    return {
        "instances": ProcessInstance.objects.filter(scenario=scenario).count(),
        "in_buffer": buffer_count(instance_id=scenario.instance_id),
        "events": Event.objects.filter(instance_id=scenario.instance_id).count(),
    }


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def events_known(definition: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(participant, event type, readable label) for every event the definition's participants name."""
    known = []
    for participant in _list(definition.get("participants")):
        if not isinstance(participant, dict):
            continue
        pid = str(participant.get("processDefinitionId") or "")
        for event in _list(participant.get("events")):
            if isinstance(event, dict) and event.get("eventType"):
                name = event.get("name") or event["eventType"]
                known.append((pid, str(event["eventType"]), f"{participant.get('name') or pid}: {name}"))
    return known


def attribute_types(definition: dict[str, Any]) -> dict[str, str]:
    """Every attribute an instance of the definition has, with its type (built-in, context, calculated)."""
    types = dict(BUILT_IN)
    for attribute in _list(definition.get("context")):
        if isinstance(attribute, dict) and attribute.get("id"):
            types[str(attribute["id"])] = str(attribute.get("type") or "String")
    for attribute in _list(definition.get("attributes")):
        if isinstance(attribute, dict) and attribute.get("id"):
            types[str(attribute["id"])] = "Number" if attribute.get("kind") == "duration" else "String"
    return types


def grants_of(*, instance: ServiceInstance) -> QuerySet[RoleGrant]:
    return (RoleGrant.objects.filter(instance=instance).select_related("user", "service_key")
            .order_by("role", "user__username", "service_key__name"))


def keys_of(*, instance: ServiceInstance) -> QuerySet[ServiceKey]:
    return ServiceKey.objects.filter(instance=instance).order_by("name")


def member_find(*, subaccount: Subaccount, name: str) -> AbstractBaseUser | None:
    """The subaccount's member with this user name or e-mail address."""
    name = name.strip()
    if not name:
        return None
    return (get_user_model().objects.filter(memberships__subaccount=subaccount)
            .filter(Q(username=name) | Q(email__iexact=name)).order_by("pk").first())
