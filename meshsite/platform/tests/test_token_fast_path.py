"""The token endpoint's fast path (tokenpath.py) answers exactly as django-oauth-toolkit's
path does: every refusal and the success, in both credential forms and the GET form, through
the real ASGI application with MESH_TOKEN_FAST_PATH on and off. Also: what it stores works
as a bearer token and can be revoked, a deleted or re-keyed client stops getting tokens at
once, PBKDF2 hashes are still upgraded, the rate limits still apply, and known and unknown
client ids cost the same work.

The fast path talks to PostgreSQL on its own connections, so these tests commit
(transactional_db) and run each request in a loop of its own, closing that loop's pool.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
from django.contrib.auth import hashers as django_hashers
from django.contrib.auth.hashers import make_password
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model

from meshsite.asgi import application
from meshsite.platform import asyncdb, tokenissue
from meshsite.platform.auth import client_for_token, forget_cached_tokens
from meshsite.platform.ratelimit import forget_refusals
from meshsite.platform.services import access_tokens_expired_delete, service_key_create, service_key_delete
from meshsite.testing import MANAGEMENT, make_instance

pytestmark = pytest.mark.django_db(transaction=True)

RELEVANT_HEADERS = ("content-type", "cache-control", "pragma", "www-authenticate", "retry-after", "connection",
                    "x-content-type-options", "x-frame-options", "referrer-policy", "cross-origin-opener-policy")


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def request(method: str, *, data: Any = None, query: dict | None = None, headers: dict | None = None,
            address: str = "192.0.2.1", host: str = "testserver", path: str = "/oauth/token") -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=application, client=(address, 40000))
        try:
            async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as http:
                return await http.request(method, path, data=data, params=query, headers=headers)
        finally:
            await asyncdb.close()

    return asyncio.run(send())


@pytest.fixture
def key(transactional_db: None, fast_hashing: None) -> Any:
    return service_key_create(instance=make_instance("em1", "a/b/c"), name="k1")


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The fast path's statements, as they are sent."""
    issued: list[str] = []
    real = tokenissue.token_issue

    async def counting(**kwargs: Any) -> Any:
        issued.append(kwargs["client_id"])
        return await real(**kwargs)

    monkeypatch.setattr("meshsite.platform.tokenpath.token_issue", counting)
    return issued


def answer(response: httpx.Response) -> tuple[int, dict, dict]:
    body = response.json()
    if "access_token" in body:
        assert isinstance(body["access_token"], str) and len(body["access_token"]) == 30
        body["access_token"] = "<token>"
    headers = {name: response.headers.get(name) for name in RELEVANT_HEADERS}
    if headers["retry-after"] is not None:
        headers["retry-after"] = "<seconds>"  # depends on the clock; checked in range below
        # So does the description; the two paths' 429s are a held second or more apart.
        body["error_description"] = re.sub(r"\d+ s$", "<seconds> s", body["error_description"])
    return response.status_code, body, headers


def cases(client_id: str, secret: str) -> dict[str, dict[str, Any]]:
    form = {"grant_type": "client_credentials"}
    return {
        "basic": {"data": form, "headers": {"Authorization": basic(client_id, secret)}},
        "body": {"data": {**form, "client_id": client_id, "client_secret": secret}},
        "get (CAP)": {"method": "GET", "query": {**form, "response_type": "token"},
                      "headers": {"Authorization": basic(client_id, secret)}},
        "wrong secret, basic": {"data": form, "headers": {"Authorization": basic(client_id, "wrong")}},
        "wrong secret, body": {"data": {**form, "client_id": client_id, "client_secret": "wrong"}},
        "wrong secret, get": {"method": "GET", "query": form, "headers": {"Authorization": basic(client_id, "x")}},
        "unknown client id": {"data": form, "headers": {"Authorization": basic("sb-nobody", secret)}},
        "no client authentication": {"data": form},
        "client id without secret": {"data": {**form, "client_id": client_id}},
        "malformed basic": {"data": form, "headers": {"Authorization": "Basic !!!"}},
        "basic without colon": {"data": form, "headers": {
            "Authorization": "Basic " + base64.b64encode(client_id.encode()).decode()}},
        "bearer instead of basic": {"data": form, "headers": {"Authorization": "Bearer x"}},
        "control character in secret": {"data": {**form, "client_id": client_id, "client_secret": "a\x01"}},
        "both forms": {"data": {**form, "client_id": client_id, "client_secret": secret},
                       "headers": {"Authorization": basic(client_id, secret)}},
        "scope": {"data": {**form, "scope": "em"}, "headers": {"Authorization": basic(client_id, secret)}},
        "unknown scope": {"data": {**form, "scope": "nope"}, "headers": {"Authorization": basic(client_id, secret)}},
        "other grant": {"data": {"grant_type": "password"}, "headers": {"Authorization": basic(client_id, secret)}},
        "no grant": {"data": {}, "headers": {"Authorization": basic(client_id, secret)}},
        "repeated grant": {"data": {"grant_type": ["client_credentials", "password"]},
                           "headers": {"Authorization": basic(client_id, secret)}},
        "json body": {"json": True, "headers": {"Authorization": basic(client_id, secret),
                                                "Content-Type": "application/json"}},
    }


def send_case(case: dict[str, Any], address: str) -> httpx.Response:
    data = json.dumps({"grant_type": "client_credentials"}) if case.get("json") else case.get("data")
    return request(case.get("method", "POST"), data=data, query=case.get("query"),
                   headers=case.get("headers"), address=address)


def test_every_answer_of_the_fast_path_is_the_old_paths(key, settings, counted):
    results: dict[bool, dict[str, Any]] = {}
    for fast in (False, True):
        settings.MESH_TOKEN_FAST_PATH = fast
        # An address per case and per path, so no case meets another's failure count.
        results[fast] = {name: answer(send_case(case, f"198.51.{int(fast)}.{number}"))
                         for number, (name, case) in enumerate(cases(key.key.application.client_id,
                                                                     key.client_secret).items())}
    for name in results[False]:
        assert results[True][name] == results[False][name], name
    assert results[True]["basic"][0] == 200 and results[True]["wrong secret, basic"][0] == 401
    # The fast path decided the usual shapes itself (the rest went on to django-oauth-toolkit).
    assert len(counted) == 7
    assert get_access_token_model().objects.count() == 2 * 5  # basic, body, get, both forms, scope


def test_refusals_past_the_limits_are_the_old_paths(key, settings):
    settings.MESH_TOKEN_FAILURES_PER_CLIENT = 2
    settings.MESH_TOKEN_FAILURES_PER_ADDRESS = 4
    client_id = key.key.application.client_id
    results = {}
    for fast in (False, True):
        settings.MESH_TOKEN_FAST_PATH = fast
        other = f"sb-other-{int(fast)}"  # a client id of its own per path: the counts are shared
        wrong = [answer(request("POST", data={"grant_type": "client_credentials"}, address=f"203.0.{int(fast)}.{n}",
                                headers={"Authorization": basic(other, "wrong")})) for n in range(3)]
        right_meanwhile = request("POST", data={"grant_type": "client_credentials"}, address="203.0.113.200",
                                  headers={"Authorization": basic(client_id, key.client_secret)}).status_code
        address = f"203.0.{int(fast)}.99"
        for n in range(4):
            request("POST", data={"grant_type": "client_credentials", "client_id": f"sb-guess-{fast}-{n}",
                                  "client_secret": "x"}, address=address)
        forget_refusals()  # so the view, not TokenFloodGuard's memory, answers the next one
        refused = request("POST", data={"grant_type": "client_credentials"}, address=address,
                          headers={"Authorization": basic(client_id, key.client_secret)})
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        results[fast] = (wrong, right_meanwhile, answer(refused))
    assert results[True] == results[False]
    assert [status for status, _, _ in results[True][0]] == [401, 401, 429]
    # Both paths' 429s are held and close their connection (tarpit.py); nothing else closes.
    assert [headers["connection"] for _, _, headers in results[True][0]] == [None, None, "close"]
    assert results[True][2][2]["connection"] == "close"
    assert results[True][1] == 200
    assert results[True][2][0] == 429 and results[True][2][1]["error"] == "temporarily_unavailable"


def test_the_stored_token_works_as_a_bearer_and_can_be_revoked(key, counted):
    response = request("POST", data={"grant_type": "client_credentials"},
                       headers={"Authorization": basic(key.key.application.client_id, key.client_secret)})
    raw = response.json()["access_token"]
    assert counted == [key.key.application.client_id]
    stored = get_access_token_model().objects.get()
    assert stored.token == "" and stored.token_checksum == hashlib.sha256(raw.encode()).hexdigest()
    assert stored.application_id == key.key.application.pk and stored.user_id is None
    assert stored.scope == "em" and stored.resource == []
    assert abs((stored.expires - stored.created).total_seconds() - response.json()["expires_in"]) < 1
    client = client_for_token(raw)
    assert client is not None and client.instance == key.key.instance
    listed = request("GET", path=f"{MANAGEMENT}/queues", headers={"Authorization": f"Bearer {raw}"})
    assert listed.status_code == 200
    stored.delete()
    forget_cached_tokens()
    assert client_for_token(raw) is None


def test_a_deleted_key_stops_getting_tokens_at_once(key, counted):
    form = {"grant_type": "client_credentials"}
    auth = {"Authorization": basic(key.key.application.client_id, key.client_secret)}
    assert request("POST", data=form, headers=auth).status_code == 200
    service_key_delete(key=key.key)
    refused = request("POST", data=form, headers=auth)
    assert refused.status_code == 401 and refused.json() == {"error": "invalid_client"}
    assert len(counted) == 2  # the fast path refused it itself: nothing cached vouched for it
    assert not get_access_token_model().objects.exists()


def test_a_new_secret_replaces_the_old_one_at_once(key):
    form = {"grant_type": "client_credentials"}
    client_id = key.key.application.client_id
    assert request("POST", data=form, headers={"Authorization": basic(client_id, key.client_secret)}).status_code == 200
    application = get_application_model().objects.get(client_id=client_id)
    application.client_secret = make_password("the-new-secret", hasher="meshsite_hmac")
    application.save(update_fields=["client_secret"])
    assert request("POST", data=form, headers={"Authorization": basic(client_id, key.client_secret)}).status_code == 401
    assert request("POST", data=form, headers={"Authorization": basic(client_id, "the-new-secret")}).status_code == 200


def test_a_pbkdf2_hash_is_upgraded_on_use_and_then_served_fast(key, counted, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher",
                                 "meshsite.platform.hashers.HMACSecretHasher"]
    legacy = make_password(key.client_secret, hasher=django_hashers.get_hasher("pbkdf2_sha256"))
    client_id = key.key.application.client_id
    get_application_model().objects.filter(client_id=client_id).update(client_secret=legacy)
    auth = {"Authorization": basic(client_id, key.client_secret)}
    wrong = request("POST", data={"grant_type": "client_credentials"}, headers={"Authorization": basic(client_id, "x")})
    assert wrong.status_code == 401
    assert get_application_model().objects.get(client_id=client_id).client_secret == legacy
    assert request("POST", data={"grant_type": "client_credentials"}, headers=auth).status_code == 200
    assert get_application_model().objects.get(client_id=client_id).client_secret.startswith("meshsite_hmac$")
    assert request("POST", data={"grant_type": "client_credentials"}, headers=auth).status_code == 200
    assert get_access_token_model().objects.count() == 2
    assert len(counted) == 3  # each went to the fast path first; the first two were handed on


def test_unknown_and_known_client_ids_do_the_same_work(key, monkeypatch, counted):
    hmacs: list[str] = []
    real = tokenissue.hashers.HMACSecretHasher.encode

    def counting(self: Any, password: str, salt: str) -> str:
        hmacs.append(password)
        return real(self, password, salt)

    monkeypatch.setattr(tokenissue.hashers.HMACSecretHasher, "encode", counting)
    statuses = []
    for client_id in (key.key.application.client_id, "sb-no-such-client"):
        statuses.append(request("POST", data={"grant_type": "client_credentials"},
                                headers={"Authorization": basic(client_id, "wrong")}).status_code)
    assert statuses == [401, 401]
    assert len(hmacs) == 2 and len(counted) == 2  # one HMAC and one statement each


def test_a_foreign_host_is_refused_with_the_security_headers(key, settings):
    for fast in (False, True):
        settings.MESH_TOKEN_FAST_PATH = fast
        response = request("POST", data={"grant_type": "client_credentials"}, host="evil.example",
                           headers={"Authorization": basic(key.key.application.client_id, key.client_secret)})
        assert response.status_code == 400 and response.headers["x-frame-options"] == "DENY"
    assert not get_access_token_model().objects.exists()


def test_an_unreachable_store_is_a_503_with_retry_after(key, monkeypatch):
    async def unreachable(**kwargs: Any) -> Any:
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr("meshsite.platform.tokenpath.token_issue", unreachable)
    response = request("POST", data={"grant_type": "client_credentials"},
                       headers={"Authorization": basic(key.key.application.client_id, key.client_secret)})
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.json() == {"error": "temporarily_unavailable"}


def test_expired_tokens_are_deleted_in_batches_and_live_ones_kept(key):
    form = {"grant_type": "client_credentials"}
    auth = {"Authorization": basic(key.key.application.client_id, key.client_secret)}
    raws = [request("POST", data=form, headers=auth).json()["access_token"] for _ in range(5)]
    ids = list(get_access_token_model().objects.order_by("id").values_list("pk", flat=True))
    get_access_token_model().objects.filter(pk__in=ids[:3]).update(expires=timezone.now() - timedelta(seconds=1))
    assert access_tokens_expired_delete(batch_size=2) == 3
    assert list(get_access_token_model().objects.order_by("id").values_list("pk", flat=True)) == ids[3:]
    assert client_for_token(raws[-1]) is not None
