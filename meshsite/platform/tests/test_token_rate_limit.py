"""Failed client authentications at /oauth/token are limited per client id and per source
address: 429 with Retry-After in RFC 6749's error shape, while nobody else's success slows."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from django.db import connection
from django.test import Client as DjangoClient
from django.test.utils import CaptureQueriesContext

from meshsite.platform.ratelimit import TokenFloodGuard
from meshsite.platform.services import service_key_create
from meshsite.testing import make_instance


def basic(client_id: str, client_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()


def token(client_id: str, secret: str, address: str = "192.0.2.1") -> Any:
    return DjangoClient().post("/oauth/token", {"grant_type": "client_credentials"},
                               HTTP_AUTHORIZATION=basic(client_id, secret), REMOTE_ADDR=address)


def token_in_body(client_id: str, secret: str, address: str) -> Any:
    return DjangoClient().post("/oauth/token", {"grant_type": "client_credentials", "client_id": client_id,
                                                "client_secret": secret}, REMOTE_ADDR=address)


@pytest.fixture
def key(db: None) -> Any:
    return service_key_create(instance=make_instance("em1", "a/b/c"), name="k1")


@pytest.fixture
def limits(settings: Any) -> Any:
    settings.MESH_TOKEN_FAILURES_PER_CLIENT = 3
    settings.MESH_TOKEN_FAILURES_PER_ADDRESS = 5
    settings.MESH_TOKEN_FAILURE_WINDOW = 60
    return settings


def assert_too_many(response: Any, error: str) -> None:
    assert response.status_code == 429, response.content
    assert 1 <= int(response["Retry-After"]) <= 60
    body = json.loads(response.content)
    assert body["error"] == error and body["error_description"]
    assert response["Cache-Control"] == "no-store"


def test_wrong_secrets_for_one_client_id_are_refused_429_past_the_limit(key, limits):
    client_id = key.key.application.client_id
    # From different addresses, so only the client id's count is reached.
    statuses = [token(client_id, "wrong", f"192.0.2.{n}").status_code for n in range(1, 4)]
    assert statuses == [401, 401, 401]
    assert_too_many(token(client_id, "wrong", "192.0.2.9"), "invalid_client")
    assert_too_many(token_in_body(client_id, "wrong", "192.0.2.10"), "invalid_client")


def test_right_secret_still_gets_a_token_while_its_client_id_is_past_the_limit(key, limits):
    client_id = key.key.application.client_id
    for n in range(1, 6):
        token(client_id, "wrong", f"192.0.2.{n}")
    assert token(client_id, key.client_secret, "198.51.100.7").status_code == 200


def test_unknown_client_ids_are_limited_like_known_ones(db, limits):
    statuses = [token("sb-nobody", "wrong", f"192.0.2.{n}").status_code for n in range(1, 5)]
    assert statuses == [401, 401, 401, 429]


def test_address_past_its_limit_is_refused_before_any_work(key, limits):
    for n in range(5):
        assert token(f"sb-guess-{n}", "wrong", "203.0.113.5").status_code == 401
    with CaptureQueriesContext(connection) as queries:
        refused = token(key.key.application.client_id, key.client_secret, "203.0.113.5")
    assert_too_many(refused, "temporarily_unavailable")
    assert len(queries) == 0
    # Another address, the same client: served at once.
    assert token(key.key.application.client_id, key.client_secret, "203.0.113.6").status_code == 200


def test_successes_are_not_counted(key, limits):
    client_id = key.key.application.client_id
    for _ in range(8):
        assert token(client_id, key.client_secret).status_code == 200
    assert token(client_id, "wrong").status_code == 401


def test_limits_of_zero_turn_limiting_off(db, settings):
    settings.MESH_TOKEN_FAILURES_PER_CLIENT = 0
    settings.MESH_TOKEN_FAILURES_PER_ADDRESS = 0
    assert {token("sb-nobody", "wrong").status_code for _ in range(25)} == {401}


def test_a_new_window_forgives_old_failures(key, limits, monkeypatch):
    client_id = key.key.application.client_id
    clock = [1_000_000.0]
    monkeypatch.setattr("meshsite.platform.ratelimit.time.time", lambda: clock[0])
    for n in range(4):
        token(client_id, "wrong", f"192.0.2.{n}")
    assert token(client_id, "wrong", "192.0.2.50").status_code == 429
    clock[0] += 60
    assert token(client_id, "wrong", "192.0.2.51").status_code == 401


def test_an_unreachable_cache_lets_token_requests_through(key, limits, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/0",
                                   "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}}}
    assert token(key.key.application.client_id, key.client_secret).status_code == 200
    assert token(key.key.application.client_id, "wrong").status_code == 401


def _asgi_token_request(address: str) -> tuple[list[dict], list[str]]:
    """Through TokenFloodGuard in front of an app that records what reached it."""
    reached: list[str] = []
    sent: list[dict] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/oauth/token", "client": (address, 50000), "headers": []}
    asyncio.run(TokenFloodGuard(app)(scope, receive, send))
    return sent, reached


def test_a_refused_address_is_answered_before_django_until_its_window_ends(key, limits, monkeypatch):
    clock = [2_000_000.0]
    monkeypatch.setattr("meshsite.platform.ratelimit.time.time", lambda: clock[0])
    assert _asgi_token_request("203.0.113.8")[1] == ["/oauth/token"]  # nothing refused yet: passed on
    for n in range(5):
        token(f"sb-guess-{n}", "wrong", "203.0.113.8")
    assert_too_many(token(key.key.application.client_id, key.client_secret, "203.0.113.8"),
                    "temporarily_unavailable")
    sent, reached = _asgi_token_request("203.0.113.8")
    assert reached == []
    assert sent[0]["status"] == 429
    headers = dict(sent[0]["headers"])
    assert 1 <= int(headers[b"retry-after"]) <= 60 and headers[b"cache-control"] == b"no-store"
    assert json.loads(sent[1]["body"])["error"] == "temporarily_unavailable"
    assert _asgi_token_request("203.0.113.9")[1] == ["/oauth/token"]  # other addresses pass
    clock[0] += 60
    assert _asgi_token_request("203.0.113.8")[1] == ["/oauth/token"]  # a new window: passed on again


def test_the_openapi_document_describes_the_429(db):
    schema = json.loads(DjangoClient().get("/api/schema/", {"format": "json"}, HTTP_ACCEPT="application/json").content)
    for method in ("get", "post"):
        answer = schema["paths"]["/oauth/token"][method]["responses"]["429"]
        assert "Retry-After" in answer["headers"]
