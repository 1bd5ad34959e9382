"""Open Connectors' instance API: connector instances and their events configuration, each
key validated and named when refused, for an open-connectors key's own instances only."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from meshsite.errors import Invalid
from meshsite.platform.models import ServiceInstance, Subaccount
from meshsite.platform.services import entitlement_put, instance_create, service_key_create, subaccount_default
from meshsite.testing import make_instance, token_for
from messaging.connectors.instances import connector_instance_create, connector_instance_update
from messaging.models import ConnectorInstance

API = "/elements/api-v2/instances"
POLLER = {"files": {"url": "/hubs/documents/files?since=${gmtDate:yyyy-MM-dd}", "idField": "id",
                    "datesConfiguration": {"updatedDateField": "modified", "createdDateField": "created"},
                    "pageSize": 100, "pollDelay": 0, "filterByUpdatedDate": True}}


class Api:
    def __init__(self, instance: ServiceInstance, key: str = "key") -> None:
        new = service_key_create(instance=instance, name=key)
        self.http = Client()
        self.token = token_for(self.http, new.key.application.client_id, new.client_secret)

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        call = getattr(self.http, method.lower())
        kwargs: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {self.token}"}
        if body is not None:
            kwargs.update(data=json.dumps(body), content_type="application/json")
        return call(path, **kwargs)


def _connectors(name: str) -> ServiceInstance:
    subaccount = subaccount_default()
    entitlement_put(subaccount=subaccount, service="open-connectors", plan="standard", quota=5)
    return instance_create(subaccount=subaccount, service="open-connectors", plan="standard", name=name)


@pytest.fixture
def api(db) -> Api:
    return Api(_connectors("oc1"))


def _create(api: Api, **body: Any) -> dict:
    answer = api("POST", API, {"name": "box", "element": {"key": "dropbox"}, **body})
    assert answer.status_code == 201, answer.content
    return answer.json()


def test_an_instance_is_created_listed_read_patched_and_deleted(api):
    created = _create(api, configuration={"event.vendor.type": "webhooks"})
    assert created["element"] == {"key": "dropbox"} and created["name"] == "box"
    assert created["configuration"] == {"event.vendor.type": "webhook"} and created["eventsEnabled"] is False
    assert created["createdDate"]
    assert [i["id"] for i in api("GET", API).json()] == [created["id"]]
    assert api("GET", f"{API}/{created['id']}").json()["name"] == "box"
    patched = api("PATCH", f"{API}/{created['id']}", {"name": "box2", "configuration": {
        "event.notification.enabled": True, "event.notification.callback.url": "https://example.com/hook"}})
    assert patched.status_code == 200, patched.content
    assert patched.json()["name"] == "box2" and patched.json()["eventsEnabled"] is True
    assert patched.json()["configuration"]["event.vendor.type"] == "webhook"
    assert api("DELETE", f"{API}/{created['id']}").status_code == 204
    assert api("GET", f"{API}/{created['id']}").status_code == 404
    assert not ConnectorInstance.objects.exists()


def test_the_configuration_is_listed_and_one_key_patched_on_a_live_instance(api):
    created = _create(api, configuration={"event.vendor.type": "polling", "event.poller.refresh_interval": 5,
                                          "event.poller.configuration": POLLER})
    listed = api("GET", f"{API}/{created['id']}/configuration").json()
    assert {"id": "event.poller.refresh_interval", "key": "event.poller.refresh_interval",
            "propertyValue": 5} in listed
    url = f"{API}/{created['id']}/configuration/event.notification.callback.url"
    answer = api("PATCH", url, {"propertyValue": "https://example.com/cb"})
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"id": "event.notification.callback.url", "key": "event.notification.callback.url",
                             "propertyValue": "https://example.com/cb"}
    enable = api("PATCH", f"{API}/{created['id']}/configuration/event.notification.enabled", {"propertyValue": True})
    assert enable.status_code == 200
    assert api("GET", f"{API}/{created['id']}").json()["eventsEnabled"] is True


BAD = [
    ({"event.notification.enabled": "yes"}, "event.notification.enabled"),
    ({"event.vendor.type": "push"}, "event.vendor.type"),
    ({"event.notification.callback.url": "ftp://example.com/x"}, "event.notification.callback.url"),
    ({"event.notification.signature.key": "k" * 257}, "event.notification.signature.key"),
    ({"event.poller.refresh_interval": 0}, "event.poller.refresh_interval"),
    ({"event.poller.refresh_interval": True}, "event.poller.refresh_interval"),
    ({"event.poller.configuration": {"files": {"url": "/x", "pageSize": 1001}}}, "event.poller.configuration"),
    ({"event.poller.configuration": {"files": {"url": "/x", "pollDelay": -1}}}, "event.poller.configuration"),
    ({"event.poller.configuration": {"files": {"url": "/x", "createdCheckTolerance": -1}}},
     "event.poller.configuration"),
    ({"event.poller.configuration": {"files": {"url": "/x", "filterByCurrentDate": 1}}},
     "event.poller.configuration"),
    ({"event.poller.configuration": {"files": {"idField": "id"}}}, "event.poller.configuration.files.url"),
    ({"event.poller.configuration": {"files": {"url": "/x", "datesConfiguration": {"zone": "UTC"}}}},
     "event.poller.configuration"),
    ({"event.unknown": 1}, "event.unknown"),
    ({"event.notification.enabled": True}, "event.notification.enabled"),
    ({"event.vendor.type": "polling", "event.poller.configuration": POLLER}, "event.poller.refresh_interval"),
    ({"event.vendor.type": "polling", "event.poller.refresh_interval": 1}, "event.poller.configuration"),
]


@pytest.mark.parametrize(("configuration", "key"), BAD)
def test_a_bad_key_or_value_is_refused_naming_the_key_and_nothing_is_stored(api, configuration, key):
    answer = api("POST", API, {"name": "box", "element": {"key": "dropbox"}, "configuration": configuration})
    assert answer.status_code == 400, answer.content
    assert set(answer.json()) == {"detail", "code", "extra"} and key in answer.json()["detail"]
    assert not ConnectorInstance.objects.exists()


@pytest.mark.parametrize(("configuration", "key"), BAD)
def test_a_bad_patch_leaves_the_instance_as_it_was(api, configuration, key):
    created = _create(api, configuration={"event.vendor.type": "webhook"})
    answer = api("PATCH", f"{API}/{created['id']}", {"configuration": configuration})
    assert answer.status_code == 400 and key in answer.json()["detail"]
    assert ConnectorInstance.objects.get().configuration == {"event.vendor.type": "webhook"}


@pytest.mark.parametrize("url", ["http://127.0.0.1/hook", "http://169.254.169.254/latest/meta-data",
                                 "http://[::1]/x"])
def test_a_callback_url_to_a_private_address_is_refused_by_the_ssrf_guard(api, url):
    created = _create(api)
    answer = api("PATCH", f"{API}/{created['id']}/configuration/event.notification.callback.url",
                 {"propertyValue": url})
    assert answer.status_code == 400
    detail = answer.json()["detail"]
    assert detail.startswith("event.notification.callback.url") and "public addresses" in detail
    assert ConnectorInstance.objects.get().configuration == {}


def test_unknown_elements_and_keys_of_the_single_key_patch_are_refused(api):
    assert "element.key" in api("POST", API, {"name": "x", "element": {"key": "sap"}}).json()["detail"]
    created = _create(api)
    answer = api("PATCH", f"{API}/{created['id']}/configuration/event.bogus", {"propertyValue": 1})
    assert answer.status_code == 400 and "event.bogus" in answer.json()["detail"]


def test_a_name_is_unique_per_connectors_instance(api):
    _create(api)
    assert api("POST", API, {"name": "box", "element": {"key": "hubspot"}}).status_code == 409


def test_events_may_go_to_an_event_mesh_instance_of_the_same_subaccount(api):
    mesh = make_instance()
    created = _create(api, eventMeshInstanceId=str(mesh.pk), topicPrefix="oc/box",
                      configuration={"event.notification.enabled": True})
    assert created["eventsEnabled"] is True and created["eventMeshInstanceId"] == str(mesh.pk)
    not_a_mesh = ServiceInstance.objects.get(name="oc1").pk
    other = api("POST", API, {"name": "b2", "element": {"key": "generic"}, "eventMeshInstanceId": str(not_a_mesh)})
    assert other.status_code == 400 and "eventMeshInstanceId" in other.json()["detail"]


def test_an_event_mesh_key_is_forbidden_and_no_token_unauthorized(db):
    mesh = Api(make_instance())
    answer = mesh("GET", API)
    assert answer.status_code == 403 and set(answer.json()) == {"detail", "code", "extra"}
    assert Client().get(API).status_code == 401


def test_another_connectors_instance_sees_none_of_these(api):
    created = _create(api)
    other = Api(_connectors("oc2"))
    assert other("GET", API).json() == []
    for method, path in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/configuration"),
                         ("PATCH", "/configuration/event.notification.enabled")]:
        answer = other(method, f"{API}/{created['id']}{path}", {"propertyValue": False} if method == "PATCH" else None)
        assert answer.status_code == 404, (method, path, answer.content)
        assert answer.json()["code"] == "not_found"
    assert ConnectorInstance.objects.filter(pk=created["id"]).exists()


def test_an_event_mesh_instance_of_another_subaccount_is_not_bound(api):
    elsewhere = Subaccount.objects.create(name="elsewhere")
    entitlement_put(subaccount=elsewhere, service="event-mesh", plan="default", quota=1)
    mesh = instance_create(subaccount=elsewhere, service="event-mesh", plan="default", name="em2",
                           parameters={"emname": "em2", "namespace": "x/y/z"})
    answer = api("POST", API, {"name": "b", "element": {"key": "generic"}, "eventMeshInstanceId": str(mesh.pk)})
    assert answer.status_code == 400 and "eventMeshInstanceId" in answer.json()["detail"]
    with pytest.raises(Invalid, match="same subaccount"):
        connector_instance_create(service_instance=ServiceInstance.objects.get(name="oc1"), name="b",
                                  element_key="generic", event_mesh=mesh)
    assert not ConnectorInstance.objects.exists()


def test_a_refused_update_leaves_the_callers_object_unchanged(api):
    instance = ConnectorInstance.objects.get(pk=_create(api)["id"])
    with pytest.raises(Invalid, match="event.poller.refresh_interval"):
        connector_instance_update(instance=instance, name="renamed",
                                  configuration={"event.poller.refresh_interval": 0})
    assert instance.name == "box" and instance.configuration == {}


def test_secret_keys_are_sealed_masked_kept_by_the_mask_and_removed_by_empty(api):
    created = _create(api, configuration={"event.notification.signature.key": "kept-signature-key-7f3a"})
    instance = ConnectorInstance.objects.get(pk=created["id"])
    assert created["configuration"]["event.notification.signature.key"] == "********"
    assert "kept-signature-key-7f3a" not in instance.secrets + json.dumps(instance.configuration)
    assert instance.secret("event.notification.signature.key") == "kept-signature-key-7f3a"
    connector_instance_update(instance=instance, configuration={"event.notification.signature.key": "********"})
    kept = ConnectorInstance.objects.get(pk=instance.pk).secret("event.notification.signature.key")
    assert kept == "kept-signature-key-7f3a"
    connector_instance_update(instance=instance, configuration={"event.notification.signature.key": ""})
    instance.refresh_from_db()
    shown = api("GET", f"{API}/{instance.pk}").json()["configuration"]
    assert instance.secrets == "" and "event.notification.signature.key" not in shown


@pytest.mark.django_db(transaction=True)
def test_the_secrets_migration_moves_stored_signature_keys_into_the_sealed_secrets():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from meshsite import secretbox

    before, after = [("messaging", "0015_connector_events")], [("messaging", "0016_connector_secrets")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        subaccount = old.get_model("platform", "Subaccount").objects.create(name="s")
        owner = old.get_model("platform", "ServiceInstance").objects.create(
            subaccount=subaccount, service="open-connectors", plan="standard", name="oc", namespace="")
        old.get_model("messaging", "ConnectorInstance").objects.create(
            service_instance=owner, name="signed", element_key="generic", signature_key=secretbox.seal("k1"))
        old.get_model("messaging", "ConnectorInstance").objects.create(
            service_instance=owner, name="plain", element_key="generic", webhook_token="t2")
        executor = MigrationExecutor(connection)
        executor.migrate(after)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    signed, plain = ConnectorInstance.objects.get(name="signed"), ConnectorInstance.objects.get(name="plain")
    assert signed.secret("event.notification.signature.key") == "k1" and plain.secrets == ""


def _polling(api: Api) -> ConnectorInstance:
    created = _create(api, configuration={
        "event.notification.enabled": True, "event.vendor.type": "polling", "event.poller.refresh_interval": 60,
        "event.poller.configuration": POLLER, "event.notification.callback.url": "https://example.com/cb"})
    return ConnectorInstance.objects.get(pk=created["id"])


def test_a_rename_leaves_the_poll_schedule_and_a_configuration_change_makes_the_poll_due(api):
    from datetime import timedelta

    from django.utils import timezone

    instance = _polling(api)
    later = timezone.now() + timedelta(minutes=42)
    ConnectorInstance.objects.filter(pk=instance.pk).update(next_poll_at=later, poll_lease_until=later)
    assert api("PATCH", f"{API}/{instance.pk}", {"name": "renamed"}).status_code == 200
    stored = ConnectorInstance.objects.get(pk=instance.pk)
    assert (stored.name, stored.next_poll_at, stored.poll_lease_until) == ("renamed", later, later)
    answer = api("PATCH", f"{API}/{instance.pk}/configuration/event.poller.refresh_interval", {"propertyValue": 5})
    assert answer.status_code == 200
    stored = ConnectorInstance.objects.get(pk=instance.pk)
    assert stored.next_poll_at is not None and stored.next_poll_at <= timezone.now()
    assert stored.poll_lease_until == later


def test_a_save_of_a_stale_object_keeps_the_secrets_written_since_it_was_read(api):
    instance = _polling(api)
    stale = ConnectorInstance.objects.get(pk=instance.pk)
    connector_instance_update(instance=instance, configuration={"event.notification.signature.key": "newer"})
    connector_instance_update(instance=stale, name="renamed")
    stored = ConnectorInstance.objects.get(pk=instance.pk)
    assert stored.name == "renamed" and stored.secret("event.notification.signature.key") == "newer"
