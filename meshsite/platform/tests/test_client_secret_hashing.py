"""Client secrets at rest: 256 random bits, stored as HMAC-SHA256 under a key derived from
SECRET_KEY, older PBKDF2 hashes upgraded on their next successful use, and an unknown
client id costing the same work as a known one."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from django.contrib.auth import hashers as django_hashers
from django.contrib.auth.hashers import make_password
from django.db import connection
from django.test import Client as DjangoClient
from django.test.utils import CaptureQueriesContext
from oauth2_provider.models import get_application_model

from meshsite.platform.services import service_key_create
from meshsite.testing import make_instance

PBKDF2 = "django.contrib.auth.hashers.PBKDF2PasswordHasher"


def basic(client_id: str, client_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()


def token_status(client_id: str, secret: str) -> int:
    response = DjangoClient().post("/oauth/token", {"grant_type": "client_credentials"},
                                   HTTP_AUTHORIZATION=basic(client_id, secret))
    return response.status_code


def stored_secret(client_id: str) -> str:
    return get_application_model().objects.get(client_id=client_id).client_secret


@pytest.fixture
def key(db: None) -> Any:
    return service_key_create(instance=make_instance("em1", "a/b/c"), name="k1")


@pytest.fixture
def pbkdf2_key(key: Any) -> Any:
    """A key as one created before client secrets moved to HMAC left it in the database."""
    legacy = make_password(key.client_secret, hasher=django_hashers.get_hasher("pbkdf2_sha256"))
    get_application_model().objects.filter(pk=key.key.application.pk).update(client_secret=legacy)
    return key


def test_new_client_secret_holds_256_random_bits(key):
    raw = base64.urlsafe_b64decode(key.client_secret + "=" * (-len(key.client_secret) % 4))
    assert len(raw) == 32
    other = service_key_create(instance=key.key.instance, name="k2")
    assert other.client_secret != key.client_secret


def test_new_client_secret_is_stored_as_hmac_sha256(key):
    stored = stored_secret(key.key.application.client_id)
    algorithm, key_id, digest = stored.split("$")
    assert algorithm == "meshsite_hmac"
    assert len(digest) == 64 and key.client_secret not in stored
    assert token_status(key.key.application.client_id, key.client_secret) == 200


def test_pbkdf2_hash_authenticates_and_is_stored_as_hmac_afterwards(pbkdf2_key):
    client_id = pbkdf2_key.key.application.client_id
    assert stored_secret(client_id).startswith("pbkdf2_sha256$")
    assert token_status(client_id, pbkdf2_key.client_secret) == 200
    assert stored_secret(client_id).startswith("meshsite_hmac$")
    assert token_status(client_id, pbkdf2_key.client_secret) == 200  # and the new hash works


def test_wrong_secret_never_upgrades_a_pbkdf2_hash(pbkdf2_key):
    client_id = pbkdf2_key.key.application.client_id
    before = stored_secret(client_id)
    assert token_status(client_id, "wrong-" + pbkdf2_key.client_secret) == 401
    assert stored_secret(client_id) == before


def test_hash_made_under_a_fallback_key_works_and_moves_to_the_current_key(key, settings):
    client_id = key.key.application.client_id
    old = stored_secret(client_id)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "rotated-" + "k" * 50
    assert token_status(client_id, key.client_secret) == 200
    new = stored_secret(client_id)
    assert new != old and new.split("$")[1] != old.split("$")[1]
    settings.SECRET_KEY_FALLBACKS = []
    assert token_status(client_id, key.client_secret) == 200  # rehashed, so no fallback needed


def test_hash_under_a_key_no_longer_configured_is_refused(key, settings):
    settings.SECRET_KEY = "another-" + "k" * 50
    assert token_status(key.key.application.client_id, key.client_secret) == 401


def _work(monkeypatch: pytest.MonkeyPatch, client_id: str, secret: str) -> tuple[int, int, int]:
    """(status, secret checks, SQL statements) of one token request."""
    calls: list[str] = []
    real = django_hashers.verify_password

    def counting(password: str, encoded: str, preferred: str = "default") -> Any:
        calls.append(encoded.split("$")[0])
        return real(password, encoded, preferred=preferred)

    monkeypatch.setattr(django_hashers, "verify_password", counting)
    with CaptureQueriesContext(connection) as queries:
        status = token_status(client_id, secret)
    monkeypatch.setattr(django_hashers, "verify_password", real)
    return status, len(calls), len(queries)


def test_unknown_client_id_does_the_work_of_a_known_one(key, monkeypatch):
    known = _work(monkeypatch, key.key.application.client_id, "wrong-secret")
    unknown = _work(monkeypatch, "sb-no-such-client", "wrong-secret")
    assert known[0] == unknown[0] == 401
    assert known[1] == unknown[1] == 1  # one secret check each, by the same hasher
    assert known[2] == unknown[2]
