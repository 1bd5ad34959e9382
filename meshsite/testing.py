"""Test helpers shared by every app's tests: instances, service keys, tokens from the real
token endpoint, and an HTTP client that sends percent-encoded names the way a server sees
them (the raw path)."""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client as DjangoClient

from meshsite.platform.auth import forget_cached_tokens
from meshsite.platform.models import Membership, ServiceInstance, Subaccount
from meshsite.platform.ratelimit import forget_refusals
from meshsite.platform.services import instance_create, service_key_create, subaccount_default

MANAGEMENT = "/hub/rest/api/v1/management/messaging"
REST = "/messagingrest/v1"


def enc(name: str) -> str:
    """A queue or topic name as one percent-encoded path segment."""
    return quote(name, safe="")


def token_for(client: DjangoClient, client_id: str, client_secret: str) -> str:
    basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    response = client.post(
        "/oauth/token", {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=f"Basic {basic}"
    )
    assert response.status_code == 200, response.content
    return json.loads(response.content)["access_token"]


@dataclass
class MeshClient:
    """A client of one service key: `call("POST", "/messagingrest/v1/queues/a%2Fq/...")`."""

    http: DjangoClient
    instance: ServiceInstance
    client_id: str
    client_secret: str
    token: str

    def call(self, method: str, path: str, body: bytes | str | None = None, *,
             headers: dict[str, str] | None = None, content_type: str | None = None,
             token: str | None = None) -> Any:
        extra: dict[str, Any] = {"REQUEST_URI": path}
        bearer = self.token if token is None else token
        if bearer:
            extra["HTTP_AUTHORIZATION"] = f"Bearer {bearer}"
        for name, value in (headers or {}).items():
            extra["HTTP_" + name.upper().replace("-", "_")] = value
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["data"] = body
        if content_type is not None:
            kwargs["content_type"] = content_type
        elif body is None:
            kwargs["content_type"] = ""
        return self.http.generic(method, path, **kwargs, **extra)

    # The contract's calls, for readable tests.
    def put_queue(self, name: str, attributes: dict | None = None) -> Any:
        body = json.dumps(attributes) if attributes is not None else None
        return self.call("PUT", f"{MANAGEMENT}/queues/{enc(name)}", body,
                         content_type="application/json" if body else None)

    def subscribe(self, queue: str, pattern: str) -> Any:
        return self.call("PUT", f"{MANAGEMENT}/queues/{enc(queue)}/subscriptions/{enc(pattern)}")

    def publish(self, kind: str, name: str, body: bytes = b"hello", *, qos: str = "1",
                content_type: str = "text/plain", headers: dict[str, str] | None = None) -> Any:
        return self.call("POST", f"{REST}/{kind}/{enc(name)}/messages", body, content_type=content_type,
                         headers={"x-qos": qos, **(headers or {})})

    def consume(self, queue: str, *, qos: str = "1") -> Any:
        return self.call("POST", f"{REST}/queues/{enc(queue)}/messages/consumption", headers={"x-qos": qos})

    def ack(self, queue: str, message_id: str) -> Any:
        return self.call("POST", f"{REST}/queues/{enc(queue)}/messages/{enc(message_id)}/acknowledgement")


def make_instance(name: str = "myem", namespace: str = "a/b/c", **descriptor: Any) -> ServiceInstance:
    return instance_create(
        subaccount=subaccount_default(), service="event-mesh", plan="default", name=name,
        parameters={"emname": name, "namespace": namespace, **descriptor},
    )


def mesh_client_for(instance: ServiceInstance, key_name: str = "key") -> MeshClient:
    new = service_key_create(instance=instance, name=key_name)
    http = DjangoClient()
    client_id = new.key.application.client_id
    return MeshClient(http, instance, client_id, new.client_secret, token_for(http, client_id, new.client_secret))


@pytest.fixture
def fast_hashing(settings: Any) -> None:
    # People's passwords (the admin's) are hashed with MD5 here, not PBKDF2, for speed; client
    # secrets keep their production hasher, HMAC, which is fast already.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher",
                                 "meshsite.platform.hashers.HMACSecretHasher"]


@pytest.fixture
def mesh(db: None, fast_hashing: None) -> Callable[..., MeshClient]:
    """Factory: `mesh("em1", "a/b/c")` -> a MeshClient of a new instance's new key."""

    forget_cached_tokens()

    def factory(name: str = "myem", namespace: str = "a/b/c", **descriptor: Any) -> MeshClient:
        return mesh_client_for(make_instance(name, namespace, **descriptor))

    return factory


@pytest.fixture(autouse=True)
def _fresh_cache(settings: Any) -> None:
    # A key prefix per test: the token endpoint's failure counters (and anything else in the
    # cache) start at zero in every test, on the real backend (Redis with REDIS_URL), without
    # clearing a Redis database the channel layer and broker share.
    settings.CACHES = {
        name: {**config, "KEY_PREFIX": f"test-{secrets.token_hex(6)}"} for name, config in settings.CACHES.items()
    }
    forget_refusals()


# --- the cockpit's people -------------------------------------------------------------------


@pytest.fixture
def subaccount(db: None, fast_hashing: None) -> Subaccount:
    return subaccount_default()


@pytest.fixture
def person(subaccount: Subaccount) -> Callable[..., DjangoClient]:
    """`person("ann", "administrator")` -> a client logged in as a new user with that role in
    the default subaccount (no role: an outsider)."""

    def factory(name: str, role: str | None = None, *, in_subaccount: Subaccount | None = None,
                **client_options: Any) -> DjangoClient:
        user = get_user_model().objects.create_user(username=name, password="pw")
        if role is not None:
            Membership.objects.create(user=user, subaccount=in_subaccount or subaccount, role=role)
        client = DjangoClient(**client_options)
        client.force_login(user)
        return client

    return factory


@contextlib.contextmanager
def wsgi_keeps_test_connection() -> Iterator[None]:
    """Requests through a bare WSGI handler (schemathesis' from_wsgi) without its per-request
    connection clean-up, as Django's own test client does around each request: that clean-up
    would close the test's connection, and with it the transaction the fixtures live in."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
