"""Process Visibility test helpers: an instance with a key of chosen roles and a token from the
real /oauth/token, and a client that posts events as a sender would."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client as DjangoClient

from meshsite.platform.auth import forget_cached_tokens
from meshsite.platform.models import ServiceInstance, Subaccount
from meshsite.platform.services import entitlement_put, instance_create, service_key_create
from meshsite.testing import token_for
from visibility.api.events import forget_cached_senders

EVENTS = "/public/v1/events"


def event(**fields: Any) -> dict[str, Any]:
    return {"processDefinitionId": "onboard", "processInstanceId": 3567, "eventType": "CREATED",
            "timestamp": "2018-08-25T02:07:42Z", "context": {"CANDIDATE_ID": 3361, "COUNTRY": "United Kingdom"},
            **fields}


@dataclass
class Sender:
    http: DjangoClient
    instance: ServiceInstance
    token: str

    def post(self, body: Any, *, content_type: str | None = "application/json", token: str | None = None,
             **headers: str) -> Any:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        extra: dict[str, Any] = {f"HTTP_{name.upper()}": value for name, value in headers.items()}
        bearer = self.token if token is None else token
        if bearer:
            extra["HTTP_AUTHORIZATION"] = f"Bearer {bearer}"
        return self.http.generic("POST", EVENTS, data, content_type=content_type or "", **extra)


def pv_instance_create(name: str, subaccount: Subaccount) -> ServiceInstance:
    entitlement_put(subaccount=subaccount, service="process-visibility", plan="standard", quota=5)
    return instance_create(subaccount=subaccount, service="process-visibility", plan="standard", name=name)


def sender_for(instance: ServiceInstance, *, roles: list[str] | None = None, key: str = "k") -> Sender:
    new = service_key_create(instance=instance, name=key, parameters={"roles": roles} if roles else None)
    http = DjangoClient()
    return Sender(http, instance, token_for(http, new.key.application.client_id, new.client_secret))


@pytest.fixture
def pv(subaccount: Subaccount) -> Callable[..., Sender]:
    """`pv("pv1", roles=[...])` -> a Sender of a new Process Visibility instance's new key."""
    forget_cached_tokens()
    forget_cached_senders()  # SQLite reuses a rolled-back test's key ids

    def factory(name: str = "pv1", *, roles: list[str] | None = None) -> Sender:
        return sender_for(pv_instance_create(name, subaccount), roles=roles)

    return factory
