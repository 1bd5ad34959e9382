"""Only the client-credentials grant is served: every other grant is answered with RFC 6749
§5.2's `unsupported_grant_type` (400), in the POST and the GET (CAP) forms, before oauthlib
reads the request (it used to answer `grant_type=password` with "Request is missing username
parameter.", as if the grant were served). No grant at all is an `invalid_request`."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.test import Client as DjangoClient
from oauth2_provider.models import get_access_token_model

from meshsite.platform.services import service_key_create
from meshsite.testing import make_instance

OTHER_GRANTS = ["password", "authorization_code", "refresh_token", "implicit",
                "urn:ietf:params:oauth:grant-type:jwt-bearer", "client_credentials ", "CLIENT_CREDENTIALS", "nonsense"]


@pytest.fixture
def key(db: None, fast_hashing: None) -> Any:
    return service_key_create(instance=make_instance("em1", "a/b/c"), name="k1")


def basic(key: Any) -> str:
    pair = f"{key.key.application.client_id}:{key.client_secret}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def assert_oauth_error(response: Any, error: str) -> None:
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/json")
    assert response["Cache-Control"] == "no-store"
    body = json.loads(response.content)
    assert body["error"] == error, body
    assert "username" not in body.get("error_description", "")


@pytest.mark.parametrize("grant", OTHER_GRANTS)
def test_post_with_another_grant_is_unsupported_grant_type(key, grant):
    data = {"grant_type": grant, "username": "u", "password": "p", "code": "c", "refresh_token": "r"}
    assert_oauth_error(DjangoClient().post("/oauth/token", data, HTTP_AUTHORIZATION=basic(key)),
                       "unsupported_grant_type")
    assert not get_access_token_model().objects.exists()


@pytest.mark.parametrize("grant", OTHER_GRANTS)
def test_get_with_another_grant_is_unsupported_grant_type(key, grant):
    query = {"grant_type": grant, "response_type": "token"}
    assert_oauth_error(DjangoClient().get("/oauth/token", query, HTTP_AUTHORIZATION=basic(key)),
                       "unsupported_grant_type")
    assert not get_access_token_model().objects.exists()


def test_another_grant_is_unsupported_even_without_valid_client_credentials(key):
    # The grant is checked first, as oauthlib itself does: the answer names the real problem.
    response = DjangoClient().post("/oauth/token", {"grant_type": "password", "username": "u", "password": "p"})
    assert_oauth_error(response, "unsupported_grant_type")


@pytest.mark.parametrize("data", [{}, {"grant_type": ""}, {"grant_type": ["client_credentials", "password"]}])
def test_a_missing_or_repeated_grant_type_is_invalid_request(key, data):
    assert_oauth_error(DjangoClient().post("/oauth/token", data, HTTP_AUTHORIZATION=basic(key)), "invalid_request")
    assert_oauth_error(DjangoClient().get("/oauth/token", data, HTTP_AUTHORIZATION=basic(key)), "invalid_request")


def test_client_credentials_still_issue_a_token_in_both_forms(key):
    post = DjangoClient().post("/oauth/token", {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(key))
    get = DjangoClient().get("/oauth/token", {"grant_type": "client_credentials", "response_type": "token"},
                             HTTP_AUTHORIZATION=basic(key))
    assert post.status_code == 200 and get.status_code == 200
    assert get_access_token_model().objects.count() == 2
