"""The token endpoint at /oauth/token: the contract's POST and GET (CAP) forms, the SAP
answer shape, refusals, and what is (not) stored at rest."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client as DjangoClient
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model

from meshsite.platform.auth import forget_cached_tokens
from meshsite.platform.services import service_key_create, service_key_delete
from meshsite.testing import MANAGEMENT, make_instance

TOKEN_KEYS = {"access_token", "token_type", "expires_in", "scope"}


def basic(client_id: str, client_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()


@pytest.fixture
def key(db: None, fast_hashing: None) -> Any:
    new = service_key_create(instance=make_instance("em1", "a/b/c"), name="k1")
    return new


@pytest.fixture
def http() -> DjangoClient:
    return DjangoClient()


def post_basic(http: DjangoClient, client_id: str, secret: str, data: dict | None = None) -> Any:
    return http.post("/oauth/token", data if data is not None else {"grant_type": "client_credentials"},
                     HTTP_AUTHORIZATION=basic(client_id, secret))


def get_cap_form(http: DjangoClient, client_id: str, secret: str) -> Any:
    return http.get("/oauth/token", {"grant_type": "client_credentials", "response_type": "token"},
                    HTTP_AUTHORIZATION=basic(client_id, secret))


def list_queues(http: DjangoClient, token: str) -> Any:
    return http.get(f"{MANAGEMENT}/queues", HTTP_AUTHORIZATION=f"Bearer {token}")


def assert_sap_token_answer(response: Any, settings: Any) -> dict:
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/json")
    body = json.loads(response.content)
    assert set(body) == TOKEN_KEYS, body
    assert "refresh_token" not in body
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.MESH_TOKEN_LIFETIME
    assert isinstance(body["scope"], str) and body["scope"]
    assert isinstance(body["access_token"], str) and len(body["access_token"]) >= 20
    return body


def test_post_form_with_http_basic_issues_bearer_token(key, http, settings):
    body = assert_sap_token_answer(post_basic(http, key.key.application.client_id, key.client_secret), settings)
    assert list_queues(http, body["access_token"]).status_code == 200


def test_post_form_with_credentials_in_body_issues_bearer_token(key, http, settings):
    response = http.post("/oauth/token", {
        "grant_type": "client_credentials",
        "client_id": key.key.application.client_id,
        "client_secret": key.client_secret,
    })
    body = assert_sap_token_answer(response, settings)
    assert list_queues(http, body["access_token"]).status_code == 200


def test_get_form_as_cap_sends_it_issues_bearer_token(key, http, settings):
    body = assert_sap_token_answer(get_cap_form(http, key.key.application.client_id, key.client_secret), settings)
    assert list_queues(http, body["access_token"]).status_code == 200


@pytest.mark.skipif("MESH_TOKEN_LIFETIME" in os.environ, reason="checks the default lifetime")
def test_expires_in_defaults_to_twelve_hours_and_matches_the_stored_expiry(key, http):
    body = json.loads(post_basic(http, key.key.application.client_id, key.client_secret).content)
    assert body["expires_in"] == 43200
    stored = get_access_token_model().objects.get()
    lifetime = (stored.expires - timezone.now()).total_seconds()
    assert 43200 - 60 < lifetime <= 43200


def test_token_answer_is_not_cacheable(key, http):
    response = post_basic(http, key.key.application.client_id, key.client_secret)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]


def test_each_request_issues_a_distinct_working_token(key, http):
    client_id = key.key.application.client_id
    tokens = [json.loads(post_basic(http, client_id, key.client_secret).content)["access_token"] for _ in range(3)]
    tokens.append(json.loads(get_cap_form(http, client_id, key.client_secret).content)["access_token"])
    assert len(set(tokens)) == 4
    assert all(list_queues(http, token).status_code == 200 for token in tokens)


@pytest.mark.parametrize("form", ["post", "get", "body"])
def test_wrong_secret_is_refused_with_401_and_no_token(key, http, form):
    client_id = key.key.application.client_id
    if form == "post":
        response = post_basic(http, client_id, "not-the-secret")
    elif form == "get":
        response = get_cap_form(http, client_id, "not-the-secret")
    else:
        response = http.post("/oauth/token", {"grant_type": "client_credentials", "client_id": client_id,
                                              "client_secret": "not-the-secret"})
    assert response.status_code == 401, response.content
    assert b"access_token" not in response.content
    assert get_access_token_model().objects.count() == 0


def test_unknown_client_id_is_refused_with_401(key, http):
    response = post_basic(http, "sb-nobody", key.client_secret)
    assert response.status_code == 401
    assert b"access_token" not in response.content


def test_missing_client_authentication_is_refused(key, http):
    response = http.post("/oauth/token", {"grant_type": "client_credentials"})
    assert response.status_code == 401
    assert b"access_token" not in response.content


@pytest.mark.parametrize("grant_type", ["password", "authorization_code", "urn:unknown"])
def test_unknown_grant_type_is_refused_with_400(key, http, grant_type):
    response = post_basic(http, key.key.application.client_id, key.client_secret, {"grant_type": grant_type})
    assert response.status_code == 400, response.content
    body = json.loads(response.content)
    assert "access_token" not in body
    assert body.get("error") in {"unsupported_grant_type", "unauthorized_client", "invalid_request"}
    assert get_access_token_model().objects.count() == 0


def test_missing_grant_type_is_refused_with_400(key, http):
    response = post_basic(http, key.key.application.client_id, key.client_secret, {})
    assert response.status_code == 400
    assert b"access_token" not in response.content


def test_other_methods_are_not_allowed(key, http):
    response = http.put("/oauth/token", "grant_type=client_credentials",
                        content_type="application/x-www-form-urlencoded",
                        HTTP_AUTHORIZATION=basic(key.key.application.client_id, key.client_secret))
    assert response.status_code == 405


def test_token_is_stored_only_as_its_checksum(key, http):
    raw = json.loads(post_basic(http, key.key.application.client_id, key.client_secret).content)["access_token"]
    stored = get_access_token_model().objects.get()
    assert stored.token != raw
    assert raw not in stored.token
    assert stored.token == ""
    assert stored.token_checksum == hashlib.sha256(raw.encode()).hexdigest()


def test_client_secret_is_hashed_at_rest(key):
    application = get_application_model().objects.get(pk=key.key.application.pk)
    assert application.client_secret != key.client_secret
    assert key.client_secret not in application.client_secret
    assert application.client_secret.startswith("meshsite_hmac$")


def test_client_secret_is_hashed_with_the_production_hasher_by_default(db):
    new = service_key_create(instance=make_instance("em2", "d/e/f"), name="k")
    stored = get_application_model().objects.get(pk=new.key.application.pk).client_secret
    assert stored != new.client_secret
    assert not stored.startswith("md5$")


def test_expired_token_is_refused_by_the_api(key, http):
    raw = json.loads(post_basic(http, key.key.application.client_id, key.client_secret).content)["access_token"]
    assert list_queues(http, raw).status_code == 200
    get_access_token_model().objects.update(expires=timezone.now() - timedelta(seconds=1))
    forget_cached_tokens()  # a change made in the database directly; see test_token_cache.py
    response = list_queues(http, raw)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "message" in json.loads(response.content)


def test_token_of_deleted_key_is_refused(key, http):
    raw = json.loads(post_basic(http, key.key.application.client_id, key.client_secret).content)["access_token"]
    assert list_queues(http, raw).status_code == 200
    service_key_delete(key=key.key)
    assert list_queues(http, raw).status_code == 401
    assert post_basic(http, key.key.application.client_id, key.client_secret).status_code == 401


def test_deleting_one_key_leaves_the_other_keys_tokens_working(key, http):
    other = service_key_create(instance=key.key.instance, name="k2")
    raw_one = json.loads(post_basic(http, key.key.application.client_id, key.client_secret).content)["access_token"]
    raw_two = json.loads(get_cap_form(http, other.key.application.client_id, other.client_secret).content)[
        "access_token"]
    service_key_delete(key=key.key)
    assert list_queues(http, raw_one).status_code == 401
    assert list_queues(http, raw_two).status_code == 200


def test_unknown_bearer_token_is_refused(key, http):
    assert list_queues(http, "not-a-token").status_code == 401


def test_token_identifies_its_own_instance_only(key, http):
    other = service_key_create(instance=make_instance("em2", "d/e/f"), name="k")
    mine = json.loads(post_basic(http, key.key.application.client_id, key.client_secret).content)["access_token"]
    theirs = json.loads(post_basic(http, other.key.application.client_id, other.client_secret).content)[
        "access_token"]
    created = http.put(f"{MANAGEMENT}/queues/a%2Fb%2Fc%2Fmine", HTTP_AUTHORIZATION=f"Bearer {mine}",
                       REQUEST_URI=f"{MANAGEMENT}/queues/a%2Fb%2Fc%2Fmine")
    assert created.status_code == 201, created.content
    assert [q["name"] for q in json.loads(list_queues(http, mine).content)] == ["a/b/c/mine"]
    assert json.loads(list_queues(http, theirs).content) == []
