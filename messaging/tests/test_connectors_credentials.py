"""Provider credentials against a real local provider: polls carry the API key, Basic pair or
bearer token the element's auth style says, a refused token is refreshed at the provider's
token endpoint (stored sealed, the request retried), and no answer ever shows a secret."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from django.db import connection

from meshsite.platform.models import ServiceInstance
from messaging.connectors import credentials, elements, instances
from messaging.connectors.instances import connector_instance_create, connector_instance_update
from messaging.connectors.polling import connector_poll_run
from messaging.models import ConnectorInstance, PollRun, PollState
from messaging.tests.test_connector_instances import Api
from messaging.tests.test_connectors_polling import T0, Vendor, VendorHandler, _connectors, configuration

API = "/elements/api-v2/instances"


class Provider(Vendor):
    """The polling tests' vendor API behind credentials: a GET without `header: expected`
    answers 401. POST /token is its OAuth2 token endpoint: a refresh grant with the valid
    refresh token and client, or a code grant with `code` and `redirect`, gets `issue` (and
    the GETs then expect the new token)."""

    def __init__(self) -> None:
        ThreadingHTTPServer.__init__(self, ("127.0.0.1", 0), ProviderHandler)
        self.records: list[dict[str, Any]] = []
        self.urls: list[str] = []
        self.status = 200
        self.raw_body: bytes | None = None
        self.tokens = False
        self.header, self.expected = "Authorization", ""
        self.seen_headers: list[dict[str, str]] = []
        self.token_forms: list[dict[str, str]] = []
        self.refresh_token, self.client = "refresh-1", ("cid", "csecret")
        self.code, self.redirect = "c1", "https://app.example.com/oauth/callback"
        self.honour_issued = True  # False: the GETs keep refusing, even the token just issued
        # Set: token requests wait for each other there, are answered one at a time, and a
        # refusal comes late (two refreshes at once, the loser's answer after the winner's).
        self.together: threading.Barrier | None = None
        self.one_at_a_time = threading.Lock()
        self.issue: dict[str, Any] = {"access_token": "access-2", "refresh_token": "refresh-2", "expires_in": 3600}


class ProviderHandler(VendorHandler):
    server: Provider

    def do_GET(self) -> None:  # noqa: N802
        self.server.seen_headers.append({k.lower(): v for k, v in self.headers.items()})
        if self.server.expected and self.headers.get(self.server.header) != self.server.expected:
            self._answer(401, {"error": "unauthorized"})
            return
        super().do_GET()

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if self.server.together is not None:
            self.server.together.wait(timeout=10)
        with self.server.one_at_a_time:
            self._token(form)

    def _token(self, form: dict[str, str]) -> None:
        self.server.token_forms.append(form)
        refresh = form.get("grant_type") == "refresh_token" and form.get("refresh_token") == self.server.refresh_token
        code = (form.get("grant_type") == "authorization_code" and form.get("code") == self.server.code
                and form.get("redirect_uri") == self.server.redirect)
        good = (refresh or code) and (form.get("client_id"), form.get("client_secret")) == self.server.client
        if self.path != "/token" or not good:
            if self.server.together is not None:
                time.sleep(0.5)
            what = "refresh token" if form.get("grant_type") == "refresh_token" else "code"
            self._answer(400, {"error": "invalid_grant", "error_description": f"{what} expired"})
            return
        if self.server.honour_issued:
            self.server.expected = "Bearer " + self.server.issue["access_token"]
        self.server.refresh_token = self.server.issue.get("refresh_token") or self.server.refresh_token
        self._answer(200, self.server.issue)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def provider() -> Iterator[Provider]:
    server = Provider()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def oc(db, settings) -> ServiceInstance:
    # The fake provider is on loopback, which the SSRF guard refuses unless allowed.
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    return _connectors("oc1")


def make(oc: ServiceInstance, provider: Provider, element_key: str, **keys: Any) -> ConnectorInstance:
    return connector_instance_create(service_instance=oc, name="crm", element_key=element_key,
                                     configuration={**configuration(provider.url()), **keys})


def oauth(provider: Provider, **extra: Any) -> dict[str, Any]:
    return {"oauth.user.token": "access-1", "oauth.user.refresh_token": "refresh-1", "oauth.api.key": "cid",
            "oauth.api.secret": "csecret", "oauth.token.url": provider.url("/token"), **extra}


def last_run(instance: ConnectorInstance) -> PollRun:
    return PollRun.objects.filter(connector_instance=instance).latest("pk")


def test_an_api_key_goes_in_the_header_and_after_the_prefix_the_element_says(oc, provider, monkeypatch):
    keyed = elements.Element(key="keyed", name="Keyed", base_url="", auth="apikey", objects_path="",
                             object_type=elements.Path("t"), object_id=elements.Path("id"),
                             event_type=elements.Path("e"), date=None, api_key_header="X-Api-Key",
                             api_key_prefix="Key ")
    monkeypatch.setitem(elements.ELEMENTS, "keyed", keyed)
    monkeypatch.setattr(instances, "ELEMENT_KEYS", frozenset(elements.ELEMENTS))
    provider.add(1, created=T0)
    provider.header, provider.expected = "X-Api-Key", "Key k-123"
    instance = make(oc, provider, "keyed", **{"api.key": "k-123"})
    assert connector_poll_run(instance_id=instance.pk) == 1
    assert last_run(instance).succeeded
    assert "authorization" not in provider.seen_headers[-1]


def test_the_generic_element_takes_the_api_key_header_and_prefix_from_its_configuration(oc, provider):
    provider.add(1, created=T0)
    provider.expected = "Bearer k-1"  # the default: Authorization, "Bearer "
    instance = make(oc, provider, "generic", **{"api.key": "k-1"})
    assert connector_poll_run(instance_id=instance.pk) == 1
    connector_instance_update(instance=instance, configuration={"api.key.header": "X-Token", "api.key.prefix": ""})
    provider.header, provider.expected = "X-Token", "k-1"
    provider.touch(1, T0.replace(hour=13))
    assert connector_poll_run(instance_id=instance.pk) == 1
    assert last_run(instance).succeeded


def test_a_username_and_password_are_sent_as_http_basic(oc, provider):
    provider.add(1, created=T0)
    provider.expected = "Basic " + base64.b64encode(b"ann:p4ss w:rd").decode()
    instance = make(oc, provider, "generic", username="ann", password="p4ss w:rd")
    assert connector_poll_run(instance_id=instance.pk) == 1


def test_an_access_token_is_sent_as_a_bearer_token(oc, provider):
    provider.add(1, created=T0)
    provider.expected = "Bearer access-1"
    instance = make(oc, provider, "hubspot", **oauth(provider))
    assert connector_poll_run(instance_id=instance.pk) == 1
    assert provider.token_forms == []


def test_without_credentials_a_protected_provider_fails_the_poll_with_401(oc, provider):
    provider.expected = "Bearer access-1"
    instance = make(oc, provider, "generic")
    assert connector_poll_run(instance_id=instance.pk) == 0
    assert "HTTP 401" in last_run(instance).error and "authorization" not in provider.seen_headers[-1]


def test_a_refused_token_is_refreshed_stored_sealed_and_the_request_sent_again(oc, provider):
    provider.add(1, created=T0)
    provider.expected = "Bearer access-0"  # the provider no longer takes access-1
    instance = make(oc, provider, "hubspot", **oauth(provider))
    assert connector_poll_run(instance_id=instance.pk) == 1
    assert last_run(instance).succeeded
    assert provider.token_forms == [{"grant_type": "refresh_token", "refresh_token": "refresh-1", "client_id": "cid",
                                     "client_secret": "csecret"}]
    assert [h.get("authorization") for h in provider.seen_headers] == ["Bearer access-1", "Bearer access-2"]
    stored = ConnectorInstance.objects.get(pk=instance.pk)
    assert stored.secret("oauth.user.token") == "access-2" and stored.secret("oauth.user.refresh_token") == "refresh-2"
    assert "access-2" not in stored.secrets and "refresh-2" not in stored.secrets
    assert "access-2" not in json.dumps(stored.configuration)
    # The next poll uses the new token at once.
    provider.touch(1, T0.replace(hour=13))
    assert connector_poll_run(instance_id=instance.pk) == 1
    assert provider.seen_headers[-1]["authorization"] == "Bearer access-2" and len(provider.token_forms) == 1


def test_a_provider_that_keeps_its_refresh_token_keeps_the_stored_one(oc, provider):
    provider.issue = {"access_token": "access-2"}
    provider.expected = "Bearer access-0"
    instance = make(oc, provider, "hubspot", **oauth(provider))
    connector_poll_run(instance_id=instance.pk)
    stored = ConnectorInstance.objects.get(pk=instance.pk)
    assert stored.secret("oauth.user.token") == "access-2" and stored.secret("oauth.user.refresh_token") == "refresh-1"


def test_a_failed_refresh_fails_the_poll_with_the_reason_and_the_next_poll_retries_the_window(oc, provider):
    provider.add(1, created=T0)
    provider.expected = "Bearer access-0"
    provider.refresh_token = "revoked"
    instance = make(oc, provider, "hubspot", **oauth(provider))
    assert connector_poll_run(instance_id=instance.pk) == 0
    run = last_run(instance)
    assert not run.succeeded
    assert "HTTP 401" in run.error and "invalid_grant: refresh token expired" in run.error
    assert "refresh-1" not in run.error and "csecret" not in run.error
    state = PollState.objects.get(connector_instance=instance)
    assert state.last_poll_at is None and state.seen == {}
    assert ConnectorInstance.objects.get(pk=instance.pk).secret("oauth.user.token") == "access-1"
    provider.refresh_token = "refresh-1"  # the tenant's app is fixed at the provider
    assert connector_poll_run(instance_id=instance.pk) == 1
    assert last_run(instance).succeeded


def test_a_poll_refreshes_at_most_once_even_when_the_new_token_is_refused_too(oc, provider):
    provider.expected, provider.honour_issued = "Bearer access-0", False
    keys = configuration(provider.url())
    keys["event.poller.configuration"]["deals"] = keys["event.poller.configuration"]["contacts"]
    instance = connector_instance_create(service_instance=oc, name="crm", element_key="hubspot",
                                         configuration={**keys, **oauth(provider)})
    assert connector_poll_run(instance_id=instance.pk) == 0
    assert len(provider.token_forms) == 1
    runs = PollRun.objects.filter(connector_instance=instance)
    assert runs.count() == 2 and all(not run.succeeded and "HTTP 401" in run.error for run in runs)
    assert [h["authorization"] for h in provider.seen_headers] == ["Bearer access-1", "Bearer access-2",
                                                                   "Bearer access-2"]


def test_every_object_type_of_a_poll_whose_refresh_failed_says_why(oc, provider):
    provider.expected, provider.refresh_token = "Bearer access-0", "revoked"
    keys = configuration(provider.url())
    keys["event.poller.configuration"]["deals"] = keys["event.poller.configuration"]["contacts"]
    instance = connector_instance_create(service_instance=oc, name="crm", element_key="hubspot",
                                         configuration={**keys, **oauth(provider)})
    assert connector_poll_run(instance_id=instance.pk) == 0
    assert len(provider.token_forms) == 1
    errors = list(PollRun.objects.filter(connector_instance=instance).values_list("error", flat=True))
    assert len(errors) == 2 and all("invalid_grant: refresh token expired" in error for error in errors)


def test_a_refused_token_without_a_refresh_token_fails_without_asking_for_one(oc, provider):
    provider.expected = "Bearer access-0"
    instance = make(oc, provider, "hubspot", **oauth(provider, **{"oauth.user.refresh_token": ""}))
    assert connector_poll_run(instance_id=instance.pk) == 0
    assert last_run(instance).error.endswith("HTTP 401") and provider.token_forms == []


def test_a_refresh_someone_else_finished_is_used_without_spending_the_refresh_token(oc, provider):
    instance = make(oc, provider, "hubspot", **oauth(provider))
    stale = ConnectorInstance.objects.get(pk=instance.pk)
    connector_instance_update(instance=instance, configuration={"oauth.user.token": "access-9"})
    fresh = credentials.access_token_refresh(instance=stale)
    assert fresh.secret("oauth.user.token") == "access-9" and provider.token_forms == []


def test_a_save_of_a_copy_read_before_a_refresh_keeps_the_rotated_tokens(oc, provider):
    provider.add(1, created=T0)
    provider.expected = "Bearer access-0"
    instance = make(oc, provider, "hubspot", **oauth(provider))
    read_before = ConnectorInstance.objects.get(pk=instance.pk)
    assert connector_poll_run(instance_id=instance.pk) == 1  # refreshes: access-2, refresh-2
    connector_instance_update(instance=read_before, name="renamed", configuration={"oauth.api.key": "cid"})
    stored = ConnectorInstance.objects.get(pk=instance.pk)
    assert stored.name == "renamed"
    assert stored.secret("oauth.user.token") == "access-2" and stored.secret("oauth.user.refresh_token") == "refresh-2"


SECRETS = {"oauth.user.token": "tok-SECRET", "oauth.user.refresh_token": "ref-SECRET",
           "oauth.api.secret": "cs-SECRET"}


def test_secrets_are_never_in_an_answer_nor_in_the_configuration_column(oc, provider):
    api = Api(oc)
    created = api("POST", API, {"name": "crm", "element": {"key": "hubspot"}, "configuration": {
        **SECRETS, "oauth.api.key": "cid", "oauth.token.url": provider.url("/token")}})
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    answers = [created, api("GET", f"{API}/{pk}"), api("GET", API), api("GET", f"{API}/{pk}/configuration"),
               api("PATCH", f"{API}/{pk}/configuration/oauth.api.secret", {"propertyValue": "cs2-SECRET"}),
               api("PATCH", f"{API}/{pk}", {"name": "crm2"})]
    assert all(answer.status_code in (200, 201) for answer in answers)
    for answer in answers:
        assert "SECRET" not in answer.content.decode(), answer.content
    shown = api("GET", f"{API}/{pk}").json()["configuration"]
    assert {key: shown[key] for key in SECRETS} == dict.fromkeys(SECRETS, "********")
    assert shown["oauth.api.key"] == "cid"
    assert answers[4].json()["propertyValue"] == "********"
    row = ConnectorInstance.objects.get(pk=pk)
    assert "SECRET" not in json.dumps(row.configuration) and "SECRET" not in row.secrets
    assert row.secret("oauth.api.secret") == "cs2-SECRET" and row.secret("oauth.user.token") == "tok-SECRET"
    # The mask sent back keeps a secret; "" removes it.
    api("PATCH", f"{API}/{pk}", {"configuration": {**shown, "oauth.user.token": ""}})
    row.refresh_from_db()
    assert row.secret("oauth.user.refresh_token") == "ref-SECRET" and row.secret("oauth.user.token") == ""


BAD = [
    ("hubspot", {"api.key": "k"}, "api.key"),
    ("hubspot", {"username": "ann"}, "username"),
    ("hubspot", {"api.key.header": "X-Key"}, "api.key.header"),
    ("dropbox", {"oauth.user.token": 5}, "oauth.user.token"),
    ("dropbox", {"oauth.user.token": "t\r\nX-Injected: 1"}, "oauth.user.token"),
    ("sfdc", {"oauth.token.url": "ftp://login.example.com/token"}, "oauth.token.url"),
    ("sfdc", {"oauth.callback.url": "javascript:alert(1)"}, "oauth.callback.url"),
    ("generic", {"api.key": "k", "username": "ann"}, "username"),
    ("generic", {"username": "a:b"}, "username"),
    ("generic", {"password": "p"}, "password"),
    ("generic", {"api.key": "k" * 4097}, "api.key"),
    ("generic", {"api.key": "k", "api.key.header": "Bad Header"}, "api.key.header"),
    ("generic", {"api.key": "k", "api.key.header": "Content-Length"}, "api.key.header"),
]


@pytest.mark.parametrize(("element_key", "keys", "named"), BAD)
def test_a_bad_credential_is_refused_naming_the_key_and_nothing_is_stored(oc, element_key, keys, named):
    api = Api(oc)
    answer = api("POST", API, {"name": "crm", "element": {"key": element_key}, "configuration": keys})
    assert answer.status_code == 400, answer.content
    assert answer.json()["detail"].startswith(named) or f" {named} " in answer.json()["detail"]
    assert answer.json()["extra"].get("key", named) == named
    assert not ConnectorInstance.objects.exists()


def test_a_credential_that_clashes_with_a_stored_secret_is_refused_and_nothing_changes(oc, provider):
    api = Api(oc)
    pk = api("POST", API, {"name": "crm", "element": {"key": "generic"},
                           "configuration": {"api.key": "k-1"}}).json()["id"]
    clash = api("PATCH", f"{API}/{pk}/configuration/username", {"propertyValue": "ann"})
    assert clash.status_code == 400 and clash.json()["detail"].startswith("username")
    # The stored key also keeps the instance from becoming an element of another auth style.
    moved = api("PATCH", f"{API}/{pk}", {"element": {"key": "hubspot"}})
    assert moved.status_code == 400 and moved.json()["detail"].startswith("api.key")
    row = ConnectorInstance.objects.get(pk=pk)
    assert row.element_key == "generic" and row.configuration == {} and row.secret("api.key") == "k-1"
    # Removing the key makes way for a Basic pair.
    switched = api("PATCH", f"{API}/{pk}", {"configuration": {"api.key": "", "username": "ann"}})
    assert switched.status_code == 200, switched.content


@pytest.mark.parametrize("url", ["http://10.0.0.5/token", "http://169.254.169.254/latest", "http://[::1]/token",
                                 "http://[::ffff:192.168.1.1]/token"])
def test_a_token_url_to_a_private_address_is_refused_by_the_ssrf_guard(oc, url):
    api = Api(oc)
    pk = api("POST", API, {"name": "crm", "element": {"key": "hubspot"}}).json()["id"]
    answer = api("PATCH", f"{API}/{pk}/configuration/oauth.token.url", {"propertyValue": url})
    assert answer.status_code == 400, answer.content
    assert answer.json()["detail"].startswith("oauth.token.url") and "public addresses" in answer.json()["detail"]
    assert "oauth.token.url" not in ConnectorInstance.objects.get(pk=pk).configuration


def test_another_connectors_instance_can_neither_read_nor_change_the_credentials(oc):
    mine = Api(oc)
    pk = mine("POST", API, {"name": "crm", "element": {"key": "hubspot"},
                            "configuration": {**SECRETS, "oauth.api.key": "cid"}}).json()["id"]
    other = Api(_connectors("oc2"))
    attempts = [other("GET", f"{API}/{pk}"), other("GET", f"{API}/{pk}/configuration"),
                other("PATCH", f"{API}/{pk}/configuration/oauth.user.token", {"propertyValue": "theirs"}),
                other("PATCH", f"{API}/{pk}", {"configuration": {"oauth.api.secret": "theirs"}})]
    assert [answer.status_code for answer in attempts] == [404, 404, 404, 404]
    assert all("SECRET" not in answer.content.decode() for answer in attempts)
    assert other("GET", API).json() == []
    row = ConnectorInstance.objects.get(pk=pk)
    assert row.secret("oauth.user.token") == "tok-SECRET" and row.secret("oauth.api.secret") == "cs-SECRET"


def code_instance(api: Api, provider: Provider, code: Any = "c1", **extra: Any) -> Any:
    return api("POST", API, {"name": "crm", "element": {"key": "hubspot"}, "providerData": {"code": code},
                             "configuration": {**configuration(provider.url()), "oauth.api.key": "cid",
                                               "oauth.api.secret": "csecret", "oauth.callback.url": provider.redirect,
                                               "oauth.token.url": provider.url("/token"), **extra}})


def test_an_authorization_code_is_exchanged_at_creation_and_the_tokens_stored_sealed(oc, provider):
    provider.add(1, created=T0)
    created = code_instance(Api(oc), provider)
    assert created.status_code == 201, created.content
    assert provider.token_forms == [{"grant_type": "authorization_code", "code": "c1",
                                     "redirect_uri": provider.redirect, "client_id": "cid", "client_secret": "csecret"}]
    shown = created.json()["configuration"]
    assert shown["oauth.user.token"] == shown["oauth.user.refresh_token"] == "********"
    assert "access-2" not in created.content.decode() and "refresh-2" not in created.content.decode()
    row = ConnectorInstance.objects.get(pk=created.json()["id"])
    assert row.secret("oauth.user.token") == "access-2" and row.secret("oauth.user.refresh_token") == "refresh-2"
    assert "access-2" not in json.dumps(row.configuration)
    assert connector_poll_run(instance_id=row.pk) == 1
    assert provider.seen_headers[-1]["authorization"] == "Bearer access-2"


def test_a_refused_code_is_a_400_with_the_providers_reason_and_nothing_is_stored(oc, provider):
    answer = code_instance(Api(oc), provider, code="c0")
    assert answer.status_code == 400, answer.content
    assert "providerData.code" in answer.json()["detail"] and "invalid_grant: code expired" in answer.json()["detail"]
    assert "csecret" not in answer.content.decode()
    assert not ConnectorInstance.objects.exists()


@pytest.mark.parametrize(("code", "extra", "named"), [
    ("c1", {"oauth.callback.url": ""}, "oauth.callback.url"),
    ("c1", {"oauth.api.key": ""}, "oauth.api.key"),
    ("", {}, "providerData.code"),
    (7, {}, "providerData.code"),
])
def test_a_code_without_what_the_exchange_needs_is_refused_before_asking_the_provider(oc, provider, code, extra,
                                                                                     named):
    answer = code_instance(Api(oc), provider, code=code, **extra)
    assert answer.status_code == 400 and named in answer.json()["detail"], answer.content
    assert provider.token_forms == [] and not ConnectorInstance.objects.exists()


def test_a_code_for_a_taken_name_is_not_spent(oc, provider):
    api = Api(oc)
    assert code_instance(api, provider).status_code == 201
    assert code_instance(api, provider).status_code == 409
    assert len(provider.token_forms) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_two_refreshes_at_once_with_a_rotating_provider_both_end_with_the_rotated_tokens(oc, provider):
    instance = make(oc, provider, "hubspot", **oauth(provider))
    provider.together = threading.Barrier(2)  # the provider takes refresh-1 once, then wants refresh-2
    got: list[str] = []
    errors: list[BaseException] = []

    def refresh() -> None:
        try:
            stale = ConnectorInstance.objects.get(pk=instance.pk)
            got.append(credentials.access_token_refresh(instance=stale).secret("oauth.user.token"))
        except BaseException as error:  # noqa: BLE001 - reported to the test thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert len(provider.token_forms) == 2  # both spent refresh-1; the provider refused the second
    assert got == ["access-2", "access-2"]
    stored = ConnectorInstance.objects.get(pk=instance.pk)
    assert stored.secret("oauth.user.token") == "access-2" and stored.secret("oauth.user.refresh_token") == "refresh-2"
