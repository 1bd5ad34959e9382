"""Providers' own webhook signatures: an instance with `event.vendor.secret` takes only bodies
its provider signed (Dropbox, HubSpot v3, generic X-Signature-256). The token URL refuses an
unsigned or wrongly signed body with a 401 and stores nothing; at the account URL an instance
that refuses the stored body's signature is skipped and named in the body's reason. Expected
signatures are computed here, from the providers' published formats, never by meshsite."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from meshsite import celery_app
from messaging.connectors.intake import vendor_event_process
from messaging.models import ConnectorInstance, ConnectorNotification, VendorEvent
from messaging.tests.test_connector_instances import API, Api, _connectors

EVENTS = "/elements/api-v2/events"
SECRET = "app-secret-1"
KEY = "event.vendor.secret"


@pytest.fixture
def api(db, settings, monkeypatch, fast_hashing, django_capture_on_commit_callbacks) -> Api:
    global _commits
    _commits = django_capture_on_commit_callbacks
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.MESH_WEBHOOK_WAKE_IN_BACKGROUND = False
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    return Api(_connectors("oc1"))


_commits: Any = None


def _instance(api: Api, receiver, element: str, name: str = "crm", account: str = "", **configuration: Any) -> dict:
    config = {"event.notification.enabled": True, "event.vendor.type": "webhook",
              "event.notification.callback.url": receiver.url("/callback"), **configuration}
    answer = api("POST", API, {"name": name, "element": {"key": element}, "configuration": config,
                               "providerAccount": account})
    assert answer.status_code == 201, answer.content
    return answer.json()


def _path(created: dict[str, Any]) -> str:
    return created["eventsUrl"].removeprefix("http://testserver")


def _post(api: Api, path: str, body: bytes, headers: dict[str, str] | None = None, *, process: bool = True):
    with _commits(execute=process):
        return api.http.post(path, data=body, content_type="application/json", headers=headers or {})


def _notified(created: dict[str, Any]) -> int:
    return ConnectorNotification.objects.filter(connector_instance_id=created["id"]).count()


def _hmac(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def _dropbox_body(account: str = "dbid:AAA") -> bytes:
    return json.dumps({"list_folder": {"accounts": [account]}, "delta": {"users": [1]}}).encode()


def _dropbox_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Dropbox-Signature": _hmac(secret, body).hex()}


def _hubspot_body(portal: int = 62515) -> bytes:
    return json.dumps([{"eventId": 1, "subscriptionType": "contact.creation", "objectId": 101, "portalId": portal,
                        "occurredAt": 1767261600000}]).encode()


def _hubspot_headers(uri: str, body: bytes, secret: str = SECRET, *, age_s: float = 0) -> dict[str, str]:
    # HubSpot v3: base64 HMAC-SHA256 of method + URI (with %3A etc. decoded) + body + timestamp (ms).
    timestamp = str(int((time.time() - age_s) * 1000))
    message = b"POST" + uri.encode() + body + timestamp.encode()
    return {"X-HubSpot-Signature-v3": base64.b64encode(_hmac(secret, message)).decode(),
            "X-HubSpot-Request-Timestamp": timestamp}


def _generic_body() -> bytes:
    return json.dumps([{"objectType": "orders", "objectId": "o1", "eventType": "created",
                        "date": "2026-12-01T10:00:00Z"}]).encode()


def _generic_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Signature-256": "sha256=" + _hmac(secret, body).hex()}


def test_a_dropbox_body_signed_with_the_app_secret_becomes_a_notification(api, receiver):
    created = _instance(api, receiver, "dropbox", **{KEY: SECRET})
    body = _dropbox_body()
    answer = _post(api, _path(created), body, _dropbox_headers(body))
    assert answer.status_code == 200, answer.content
    assert VendorEvent.objects.get().status == "processed"
    events = json.loads(bytes(ConnectorNotification.objects.get().body))["message"]["events"]
    assert [(e["objectType"], e["objectId"]) for e in events] == [("files", "dbid:AAA")]


def test_a_hubspot_v3_body_is_checked_over_the_full_uri_with_its_encoded_characters_decoded(api, receiver):
    created = _instance(api, receiver, "hubspot", **{KEY: SECRET})
    path = _path(created) + "?app=a%3Ab%2Fc"
    body = _hubspot_body()
    # HubSpot signs the URI with %3A and %2F decoded.
    answer = _post(api, path, body, _hubspot_headers("http://testserver" + _path(created) + "?app=a:b/c", body))
    assert answer.status_code == 200, answer.content
    assert _notified(created) == 1
    # Signed over the URI as sent (still encoded), it does not verify.
    encoded = _post(api, path, body, _hubspot_headers("http://testserver" + path, body))
    assert encoded.status_code == 401 and VendorEvent.objects.count() == 1


def test_a_generic_body_signed_github_style_becomes_a_notification(api, receiver):
    created = _instance(api, receiver, "generic", **{KEY: SECRET})
    body = _generic_body()
    answer = _post(api, _path(created), body, _generic_headers(body))
    assert answer.status_code == 200, answer.content
    events = json.loads(bytes(ConnectorNotification.objects.get().body))["message"]["events"]
    assert [(e["objectId"], e["eventType"]) for e in events] == [("o1", "CREATED")]


CASES: dict[str, tuple[Callable[[], bytes], Callable[[str, bytes], dict[str, str]], str]] = {
    "dropbox": (_dropbox_body, lambda uri, body: _dropbox_headers(body, "wrong"), "X-Dropbox-Signature"),
    "hubspot": (_hubspot_body, lambda uri, body: _hubspot_headers(uri, body, "wrong"), "X-HubSpot-Signature-v3"),
    "generic": (_generic_body, lambda uri, body: _generic_headers(body, "wrong"), "X-Signature-256"),
}


@pytest.mark.parametrize("element", sorted(CASES))
@pytest.mark.parametrize("signed", ["missing", "wrong secret", "other body"])
def test_a_missing_or_wrong_signature_on_the_token_url_is_401_and_nothing_is_stored(api, receiver, element, signed):
    make_body, wrong_headers, header = CASES[element]
    created = _instance(api, receiver, element, **{KEY: SECRET})
    body, uri = make_body(), "http://testserver" + _path(created)
    headers = {"missing": {}, "wrong secret": wrong_headers(uri, body)}.get(signed)
    if headers is None:  # signed right, but over another body
        headers = _right(element, uri, b"[]")
    answer = _post(api, _path(created), body, headers)
    assert answer.status_code == 401, answer.content
    assert answer.json()["code"] == "invalid_signature" and header in answer.json()["detail"]
    assert set(answer.json()) == {"detail", "code", "extra"} and SECRET not in answer.content.decode()
    assert not VendorEvent.objects.exists() and not ConnectorNotification.objects.exists()
    # The same body signed right is taken: the refusal was the signature's.
    assert _post(api, _path(created), body, _right(element, uri, body)).status_code == 200


def _right(element: str, uri: str, body: bytes) -> dict[str, str]:
    if element == "dropbox":
        return _dropbox_headers(body)
    if element == "hubspot":
        return _hubspot_headers(uri, body)
    return _generic_headers(body)


def test_a_stale_or_future_hubspot_timestamp_is_refused(api, receiver):
    created = _instance(api, receiver, "hubspot", **{KEY: SECRET})
    uri, body = "http://testserver" + _path(created), _hubspot_body()
    stale = _post(api, _path(created), body, _hubspot_headers(uri, body, age_s=6 * 60))
    assert stale.status_code == 401 and "X-HubSpot-Request-Timestamp" in stale.json()["detail"]
    ahead = _post(api, _path(created), body, _hubspot_headers(uri, body, age_s=-6 * 60))
    assert ahead.status_code == 401
    assert not VendorEvent.objects.exists()
    assert _post(api, _path(created), body, _hubspot_headers(uri, body, age_s=4 * 60)).status_code == 200


def test_at_the_account_url_only_the_instance_whose_secret_signed_the_body_gets_it(api, receiver):
    right = _instance(api, receiver, "dropbox", "right", account="dbid:AAA", **{KEY: SECRET})
    other = _instance(api, receiver, "dropbox", "other", account="dbid:AAA", **{KEY: "another-secret"})
    body = _dropbox_body("dbid:AAA")
    answer = _post(api, f"{EVENTS}/dropbox/", body, _dropbox_headers(body))
    assert answer.status_code == 200
    row = VendorEvent.objects.get()
    assert row.status == "processed" and row.connector_instance_id == right["id"]
    assert _notified(right) == 1 and _notified(other) == 0
    assert f"connector instance {other['id']} refused the signature" in row.reason
    assert "X-Dropbox-Signature" in row.reason and f"connector instance {right['id']} " not in row.reason
    assert row.signature_headers == _dropbox_headers(body)


def test_at_the_account_url_a_body_no_instance_accepts_is_failed_naming_each(api, receiver):
    first = _instance(api, receiver, "hubspot", "a", account="62515", **{KEY: "s-a"})
    second = _instance(api, receiver, "hubspot", "b", account="62515", **{KEY: "s-b"})
    body = _hubspot_body()
    _post(api, f"{EVENTS}/hubspot/", body, _hubspot_headers(f"http://testserver{EVENTS}/hubspot/", body, "s-c"))
    row = VendorEvent.objects.get()
    assert row.status == "failed" and not ConnectorNotification.objects.exists()
    assert f"connector instance {first['id']} refused" in row.reason
    assert f"connector instance {second['id']} refused" in row.reason
    listed = api("GET", f"{API}/{first['id']}/vendor-events?status=failed").json()
    assert [v["reason"] for v in listed] == [row.reason]


def test_a_hubspot_body_at_the_account_url_is_judged_by_when_it_arrived_not_when_it_is_processed(api, receiver):
    created = _instance(api, receiver, "hubspot", account="62515", **{KEY: SECRET})
    uri, body = f"http://testserver{EVENTS}/hubspot/", _hubspot_body()
    _post(api, f"{EVENTS}/hubspot/", body, _hubspot_headers(uri, body, age_s=10 * 60), process=False)
    # It arrived ten minutes ago, signed then, and waited for a worker since.
    VendorEvent.objects.update(received_at=timezone.now() - timedelta(minutes=10))
    with _commits(execute=True):
        assert vendor_event_process(vendor_event_id=VendorEvent.objects.get().pk) == 1
    assert _notified(created) == 1
    # Signed ten minutes before it arrived: refused, whenever it is processed.
    _post(api, f"{EVENTS}/hubspot/", body, _hubspot_headers(uri, body, age_s=10 * 60))
    late = VendorEvent.objects.latest("pk")
    assert late.status == "failed" and "X-HubSpot-Request-Timestamp" in late.reason


def test_an_instance_without_a_vendor_secret_takes_unsigned_bodies_as_before(api, receiver):
    created = _instance(api, receiver, "dropbox", account="dbid:AAA")
    assert _post(api, _path(created), _dropbox_body()).status_code == 200
    assert _post(api, f"{EVENTS}/dropbox/", _dropbox_body()).status_code == 200
    assert _notified(created) == 2
    assert [r.reason for r in VendorEvent.objects.all()] == ["", ""]


def test_the_secret_is_sealed_masked_kept_by_the_mask_and_removed_by_empty(api, receiver):
    created = _instance(api, receiver, "dropbox", **{KEY: SECRET})
    base = f"{API}/{created['id']}"
    answers = [
        api("GET", base), api("GET", API), api("GET", f"{base}/configuration"),
        api("PATCH", base, {"configuration": {KEY: "********"}}),
        api("PATCH", f"{base}/configuration/{KEY}", {"propertyValue": "********"}),
    ]
    assert created["configuration"][KEY] == "********"
    for answer in answers:
        assert answer.status_code == 200 and SECRET not in answer.content.decode()
    assert {"id": KEY, "key": KEY, "propertyValue": "********"} in answers[2].json()
    instance = ConnectorInstance.objects.get()
    assert KEY not in instance.configuration and SECRET not in json.dumps(instance.configuration)
    assert SECRET not in instance.secrets and instance.secret(KEY) == SECRET  # the mask kept it
    assert _post(api, _path(created), _dropbox_body()).status_code == 401
    api("PATCH", f"{base}/configuration/{KEY}", {"propertyValue": ""})
    assert ConnectorInstance.objects.get().secret(KEY) == ""
    assert KEY not in api("GET", base).json()["configuration"]
    assert _post(api, _path(created), _dropbox_body()).status_code == 200


@pytest.mark.parametrize("value", ["k" * 257, 42, None, ["a"]])
def test_a_bad_vendor_secret_is_400_naming_the_key_and_changes_nothing(api, receiver, value):
    created = _instance(api, receiver, "dropbox", **{KEY: SECRET})
    answer = api("PATCH", f"{API}/{created['id']}/configuration/{KEY}", {"propertyValue": value})
    assert answer.status_code == 400 and KEY in answer.json()["detail"]
    refused = api("POST", API, {"name": "x", "element": {"key": "generic"}, "configuration": {KEY: value}})
    assert refused.status_code == 400 and KEY in refused.json()["detail"]
    assert ConnectorInstance.objects.get().secret(KEY) == SECRET


def test_another_connectors_instance_can_neither_read_nor_change_the_secret(api, receiver):
    created = _instance(api, receiver, "generic", **{KEY: SECRET})
    other = Api(_connectors("oc2"))
    base = f"{API}/{created['id']}"
    for method, path, payload in [("GET", "", None), ("GET", "/configuration", None),
                                  ("PATCH", "", {"configuration": {KEY: "taken-over"}}),
                                  ("PATCH", f"/configuration/{KEY}", {"propertyValue": "taken-over"}),
                                  ("PATCH", f"/configuration/{KEY}", {"propertyValue": ""})]:
        answer = other(method, base + path, payload)
        assert answer.status_code == 404, (method, path, answer.content)
        assert SECRET not in answer.content.decode()
    assert ConnectorInstance.objects.get().secret(KEY) == SECRET
    body = _generic_body()
    assert _post(api, _path(created), body, _generic_headers(body, "taken-over")).status_code == 401
    assert _post(api, _path(created), body, _generic_headers(body)).status_code == 200


def test_a_salesforce_instance_with_a_vendor_secret_refuses_every_body_it_cannot_check(api, receiver):
    # Salesforce does not sign its bodies: a secret set there cannot be honoured, so nothing passes.
    created = _instance(api, receiver, "sfdc", **{KEY: SECRET})
    body = json.dumps({"payload": {"ChangeEventHeader": {"entityName": "Account", "changeType": "CREATE",
                                                         "recordIds": ["001"], "commitTimestamp": 1}}}).encode()
    answer = _post(api, _path(created), body, _generic_headers(body))
    assert answer.status_code == 401 and "no signature scheme" in answer.json()["detail"]
    assert not VendorEvent.objects.exists()
