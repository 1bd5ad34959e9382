"""The polling event source against a real local vendor API: what changed becomes
notifications of at most 10 events, nothing twice, failures lose nothing, and the schedule
(leases, intervals) lives in the database."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from meshsite.platform.models import ServiceInstance
from meshsite.platform.services import entitlement_put, instance_create, service_key_create, subaccount_default
from meshsite.testing import token_for
from messaging import dispatch, tasks
from messaging.connectors import polling
from messaging.connectors.instances import connector_instance_create
from messaging.connectors.polling import connector_poll_run, polls_due_start
from messaging.models import ConnectorInstance, ConnectorNotification, PollRun, PollState

API = "/elements/api-v2/instances"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class Vendor(ThreadingHTTPServer):
    """A vendor API: GET /contacts lists `records` as {"data": [...]}, paged by page/pageSize
    when asked; `status`/`raw_body` script a broken answer."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), VendorHandler)
        self.records: list[dict[str, Any]] = []
        self.urls: list[str] = []
        self.status = 200
        self.raw_body: bytes | None = None
        self.tokens = False  # page by a nextPage token in the body instead of page numbers

    def url(self, path: str = "/contacts") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def add(self, object_id: int, *, created: datetime, updated: datetime | None = None) -> None:
        self.records.append({"id": object_id, "name": f"contact {object_id}", "created": iso(created),
                             "modified": iso(updated or created)})

    def touch(self, object_id: int, updated: datetime) -> None:
        next(r for r in self.records if r["id"] == object_id)["modified"] = iso(updated)

    def page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        size = int(query.get("pageSize", ["0"])[0]) or len(self.records) or 1
        if self.tokens:
            start = int(query.get("nextPage", ["0"])[0])
            body: dict[str, Any] = {"data": self.records[start:start + size]}
            if start + size < len(self.records):
                body["nextPage"] = str(start + size)
            return body
        start = (int(query.get("page", ["1"])[0]) - 1) * size
        return {"data": self.records[start:start + size]}


class VendorHandler(BaseHTTPRequestHandler):
    server: Vendor

    def do_GET(self) -> None:  # noqa: N802
        self.server.urls.append(self.path)
        parts = urlsplit(self.path)
        body = self.server.raw_body
        if body is None:
            body = json.dumps(self.server.page(parse_qs(parts.query))).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def vendor() -> Iterator[Vendor]:
    server = Vendor()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _connectors(name: str) -> ServiceInstance:
    subaccount = subaccount_default()
    entitlement_put(subaccount=subaccount, service="open-connectors", plan="standard", quota=5)
    return instance_create(subaccount=subaccount, service="open-connectors", plan="standard", name=name)


@pytest.fixture
def oc(db, settings) -> ServiceInstance:
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    return _connectors("oc1")


def poller(url: str, **extra: Any) -> dict[str, Any]:
    return {"contacts": {
        "url": url, "idField": "id",
        "datesConfiguration": {"updatedDateField": "modified", "createdDateField": "created"}, **extra}}


def configuration(url: str, *, interval: int = 5, **extra: Any) -> dict[str, Any]:
    return {"event.notification.enabled": True, "event.vendor.type": "polling",
            "event.notification.callback.url": "https://example.com/hook",
            "event.poller.refresh_interval": interval, "event.poller.configuration": poller(url, **extra)}


def make(oc: ServiceInstance, url: str, *, name: str = "crm", **extra: Any) -> ConnectorInstance:
    return connector_instance_create(service_instance=oc, name=name, element_key="generic",
                                     configuration=configuration(url, **extra))


def bodies(instance: ConnectorInstance) -> list[dict[str, Any]]:
    rows = ConnectorNotification.objects.filter(connector_instance=instance).order_by("pk")
    return [json.loads(bytes(row.body)) for row in rows]


def events(instance: ConnectorInstance) -> list[dict[str, str]]:
    return [event for body in bodies(instance) for event in body["message"]["events"]]


def state(instance: ConnectorInstance) -> PollState:
    return PollState.objects.get(connector_instance=instance, object_type="contacts")


def test_25_changed_records_make_notifications_of_10_10_and_5_each_with_the_full_raw(oc, vendor):
    for n in range(25):
        vendor.add(n, created=T0)
    instance = make(oc, vendor.url())
    assert connector_poll_run(instance_id=instance.pk) == 25
    rows = list(ConnectorNotification.objects.filter(connector_instance=instance).order_by("pk"))
    assert [row.events_count for row in rows] == [10, 10, 5]
    assert all(row.source == "polling" for row in rows)
    sent = bodies(instance)
    assert [len(body["message"]["events"]) for body in sent] == [10, 10, 5]
    assert all(body["message"]["raw"] == {"contacts": vendor.records} for body in sent)
    assert sorted(int(e["objectId"]) for e in events(instance)) == list(range(25))
    first = events(instance)[0]
    assert set(first) == {"objectType", "objectId", "eventType", "elementKey", "date", "pollDate"}
    assert first["objectType"] == "contacts" and first["elementKey"] == "generic"
    assert first["date"] == "2026-03-01T12:00:00.000Z"
    run = PollRun.objects.get(connector_instance=instance)
    assert run.succeeded and run.records == 25 and run.events_count == 25 and not run.error


def test_created_and_updated_are_told_apart_within_the_tolerance(oc, vendor):
    vendor.add(1, created=T0)  # same dates: created
    vendor.add(2, created=T0, updated=T0 + timedelta(seconds=5))  # within 10 s: created
    vendor.add(3, created=T0, updated=T0 + timedelta(seconds=11))  # beyond: updated
    instance = make(oc, vendor.url(), createdCheckTolerance=10)
    connector_poll_run(instance_id=instance.pk)
    kinds = {e["objectId"]: e["eventType"] for e in events(instance)}
    assert kinds == {"1": "CREATED", "2": "CREATED", "3": "UPDATED"}


def test_without_a_created_date_field_every_change_is_updated(oc, vendor):
    vendor.add(1, created=T0)
    instance = connector_instance_create(service_instance=oc, name="crm", element_key="generic", configuration={
        **configuration(vendor.url()), "event.poller.configuration": {"contacts": {
            "url": vendor.url(), "datesConfiguration": {"updatedDateField": "modified"}}}})
    connector_poll_run(instance_id=instance.pk)
    assert [e["eventType"] for e in events(instance)] == ["UPDATED"]


def test_a_second_poll_reports_nothing_unchanged_and_exactly_one_updated_record(oc, vendor):
    for n in range(3):
        vendor.add(n, created=T0)
    instance = make(oc, vendor.url())
    assert connector_poll_run(instance_id=instance.pk) == 3
    assert connector_poll_run(instance_id=instance.pk) == 0
    assert ConnectorNotification.objects.filter(connector_instance=instance).count() == 1
    vendor.touch(1, T0 + timedelta(hours=1))
    assert connector_poll_run(instance_id=instance.pk) == 1
    last = bodies(instance)[-1]["message"]
    assert [(e["objectId"], e["eventType"]) for e in last["events"]] == [("1", "UPDATED")]
    assert last["raw"] == {"contacts": [vendor.records[1]]}
    assert state(instance).seen["1"] == "2026-03-01T13:00:00.000Z"


def test_the_date_macros_expand_to_the_last_poll_minus_the_poll_delay(oc, vendor, monkeypatch):
    url = vendor.url("/contacts?since=${gmtDate:yyyy-MM-dd'T'HH:mm:ss}&ms=${epoch}&local=${date:HH:mm}")
    instance = make(oc, url, pollDelay=90, datesConfiguration={
        "updatedDateField": "modified", "createdDateField": "created", "timezone": "Europe/Berlin"})
    monkeypatch.setattr(timezone, "now", lambda: T0)
    connector_poll_run(instance_id=instance.pk)
    # First poll: now minus the 5-minute interval, minus 90 s.
    first = T0 - timedelta(minutes=5, seconds=90)
    expected = int(first.timestamp() * 1000)
    assert vendor.urls[-1] == f"/contacts?since=2026-03-01T11:53:30&ms={expected}&local=12:53"
    monkeypatch.setattr(timezone, "now", lambda: T0 + timedelta(minutes=5))
    connector_poll_run(instance_id=instance.pk)
    assert parse_qs(urlsplit(vendor.urls[-1]).query)["since"] == ["2026-03-01T11:58:30"]  # T0 - 90 s
    assert state(instance).last_poll_at == T0 + timedelta(minutes=5)


def test_pages_are_followed_while_full_up_to_the_page_limit(oc, vendor, settings):
    for n in range(25):
        vendor.add(n, created=T0)
    instance = make(oc, vendor.url(), pageSize=10)
    assert connector_poll_run(instance_id=instance.pk) == 25
    pages = [parse_qs(urlsplit(u).query) for u in vendor.urls]
    assert [(p["page"], p["pageSize"]) for p in pages] == [(["1"], ["10"]), (["2"], ["10"]), (["3"], ["10"])]
    settings.MESH_CONNECTOR_POLL_MAX_PAGES = 2
    for n in range(25, 50):
        vendor.add(n, created=T0)
    vendor.urls.clear()
    assert connector_poll_run(instance_id=instance.pk) == 0  # pages 1 and 2 hold only records seen
    assert len(vendor.urls) == 2
    run = PollRun.objects.filter(connector_instance=instance).latest("pk")
    assert run.succeeded and "stopped after 2 pages" in run.error


def test_a_next_page_token_is_followed(oc, vendor):
    vendor.tokens = True
    for n in range(7):
        vendor.add(n, created=T0)
    instance = make(oc, vendor.url(), pageSize=3)
    assert connector_poll_run(instance_id=instance.pk) == 7
    assert [parse_qs(urlsplit(u).query).get("nextPage") for u in vendor.urls] == [None, ["3"], ["6"]]


def test_filter_by_updated_date_drops_records_not_updated_since_the_last_poll(oc, vendor, monkeypatch):
    vendor.add(1, created=T0 - timedelta(days=2))
    vendor.add(2, created=T0 - timedelta(minutes=1))
    instance = make(oc, vendor.url(), filterByUpdatedDate=True)
    monkeypatch.setattr(timezone, "now", lambda: T0)
    assert connector_poll_run(instance_id=instance.pk) == 1
    assert [e["objectId"] for e in events(instance)] == ["2"]


@pytest.mark.parametrize(("setup", "reason"), [
    (lambda v: setattr(v, "status", 500), "HTTP 500"),
    (lambda v: setattr(v, "raw_body", b"<html>maintenance</html>"), "not JSON"),
    (lambda v: setattr(v, "raw_body", b'{"error": "nope"}'), "no records array"),
    (lambda v: v.records.__setitem__(0, {**v.records[0], "modified": "yesterday"}), "is not a ISO 8601 date"),
])
def test_a_failed_poll_is_logged_keeps_the_state_and_the_next_poll_reports_the_records(oc, vendor, setup, reason):
    vendor.add(1, created=T0)
    vendor.add(2, created=T0)
    instance = make(oc, vendor.url())
    setup(vendor)
    assert connector_poll_run(instance_id=instance.pk) == 0
    run = PollRun.objects.get(connector_instance=instance)
    assert not run.succeeded and reason in run.error
    assert state(instance).last_poll_at is None and state(instance).seen == {}
    assert not ConnectorNotification.objects.exists()
    instance.refresh_from_db()
    assert instance.poll_lease_until is None and instance.next_poll_at is not None
    vendor.status, vendor.raw_body = 200, None
    vendor.records[0]["modified"] = iso(T0)
    assert connector_poll_run(instance_id=instance.pk) == 2


def test_a_vendor_that_is_down_fails_the_run_with_connection_refused_and_the_task_does_not_raise(oc, vendor):
    instance = make(oc, vendor.url())
    vendor.shutdown()
    vendor.server_close()
    before = timezone.now()
    assert tasks.connector_poll(instance.pk) == 0
    run = PollRun.objects.get(connector_instance=instance)
    assert not run.succeeded and "connection refused" in run.error
    instance.refresh_from_db()
    assert instance.next_poll_at is not None and instance.next_poll_at >= before + timedelta(minutes=5)


def test_only_due_enabled_polling_instances_are_started_and_never_twice(oc, vendor, monkeypatch,
                                                                         django_capture_on_commit_callbacks):
    sent: list[int] = []

    def send(pk: int) -> str:
        sent.append(pk)
        return "id"

    monkeypatch.setattr(dispatch, "connector_poll", send)
    due = make(oc, vendor.url(), name="due")
    later = make(oc, vendor.url(), name="later")
    ConnectorInstance.objects.filter(pk=later.pk).update(next_poll_at=timezone.now() + timedelta(minutes=3))
    webhook = connector_instance_create(service_instance=oc, name="hooks", element_key="generic", configuration={
        "event.notification.enabled": True, "event.vendor.type": "webhook",
        "event.notification.callback.url": "https://example.com/hook"})
    disabled = connector_instance_create(service_instance=oc, name="off", element_key="generic",
                                         configuration={**configuration(vendor.url()),
                                                        "event.notification.enabled": False})
    assert webhook.next_poll_at is None and disabled.next_poll_at is None
    with django_capture_on_commit_callbacks(execute=True):
        assert polls_due_start(timezone.now()) == 1
    assert sent == [due.pk]
    with django_capture_on_commit_callbacks(execute=True):
        assert polls_due_start(timezone.now()) == 0  # the lease is held
    assert sent == [due.pk]
    # A lease whose poll died expires, and the instance is started again.
    with django_capture_on_commit_callbacks(execute=True):
        assert polls_due_start(timezone.now() + timedelta(days=1)) == 2
    assert sorted(sent) == sorted([due.pk, due.pk, later.pk])


def test_a_finished_poll_releases_the_lease_and_is_due_again_after_the_interval(oc, vendor, monkeypatch,
                                                                               django_capture_on_commit_callbacks):
    monkeypatch.setattr(dispatch, "connector_poll", lambda pk: str(connector_poll_run(instance_id=pk)))
    vendor.add(1, created=T0)
    instance = make(oc, vendor.url())
    with django_capture_on_commit_callbacks(execute=True):
        assert polls_due_start(timezone.now()) == 1
    assert ConnectorNotification.objects.filter(connector_instance=instance).count() == 1
    instance.refresh_from_db()
    assert instance.poll_lease_until is None
    assert polls_due_start(timezone.now()) == 0
    assert polls_due_start(timezone.now() + timedelta(minutes=5, seconds=1)) == 1


class Api:
    def __init__(self, instance: ServiceInstance) -> None:
        new = service_key_create(instance=instance, name="key")
        self.http = Client()
        self.token = token_for(self.http, new.key.application.client_id, new.client_secret)

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        return getattr(self.http, method.lower())(path, data=json.dumps(body), content_type="application/json",
                                                  HTTP_AUTHORIZATION=f"Bearer {self.token}")


def test_changing_the_refresh_interval_through_the_api_reschedules_the_poll(oc, vendor):
    api = Api(oc)
    created = api("POST", API, {"name": "crm", "element": {"key": "generic"}, "configuration": configuration(
        vendor.url(), interval=60)})
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    connector_poll_run(instance_id=pk)
    scheduled = ConnectorInstance.objects.get(pk=pk).next_poll_at
    assert scheduled is not None and scheduled > timezone.now() + timedelta(minutes=59)
    answer = api("PATCH", f"{API}/{pk}/configuration/event.poller.refresh_interval", {"propertyValue": 1})
    assert answer.status_code == 200, answer.content
    rescheduled = ConnectorInstance.objects.get(pk=pk).next_poll_at
    assert rescheduled is not None and rescheduled <= timezone.now()
    connector_poll_run(instance_id=pk)
    after = ConnectorInstance.objects.get(pk=pk).next_poll_at
    assert after is not None and after < timezone.now() + timedelta(minutes=1, seconds=1)
    api("PATCH", f"{API}/{pk}", {"configuration": {"event.notification.enabled": False}})
    assert ConnectorInstance.objects.get(pk=pk).next_poll_at is None


def test_one_instance_poll_never_writes_into_another_instances_state(oc, vendor):
    vendor.add(1, created=T0)
    mine = make(oc, vendor.url(), name="mine")
    other_oc = _connectors("oc2")
    theirs = make(other_oc, vendor.url(), name="theirs")
    connector_poll_run(instance_id=mine.pk)
    assert not PollState.objects.filter(connector_instance=theirs).exists()
    assert not PollRun.objects.filter(connector_instance=theirs).exists()
    assert not ConnectorNotification.objects.filter(connector_instance=theirs).exists()
    # Their first poll still reports the record mine has seen: the seen sets are their own.
    assert connector_poll_run(instance_id=theirs.pk) == 1
    assert [e["objectId"] for e in events(theirs)] == ["1"]
    assert state(mine).seen == state(theirs).seen == {"1": "2026-03-01T12:00:00.000Z"}


def test_the_seen_set_keeps_only_the_most_recently_updated_records(settings):
    settings.MESH_CONNECTOR_POLL_SEEN_LIMIT = 2
    seen = {"a": "2026-01-01T00:00:00.000Z", "b": "2026-01-03T00:00:00.000Z"}
    change = polling.Change("c", "2026-01-02T00:00:00.000Z", {}, {})
    assert polling.seen_after(seen, [change]) == {"b": seen["b"], "c": change.updated}


def test_records_are_found_in_an_array_body_or_under_a_common_key():
    assert polling.records_of([{"id": 1}], "contacts") == [{"id": 1}]
    assert polling.records_of({"meta": [], "contacts": [{"id": 2}]}, "contacts") == [{"id": 2}]
    assert polling.records_of({"results": [{"id": 3}]}, "contacts") == [{"id": 3}]
    with pytest.raises(polling.PollFailed):
        polling.records_of({"data": {"id": 4}}, "contacts")


def test_a_relative_url_joins_the_elements_base_url(oc, monkeypatch):
    instance = connector_instance_create(service_instance=oc, name="box", element_key="dropbox",
                                         configuration=configuration("/files/list?x=1"))
    assert polling._absolute(instance, "/files/list?x=1") == "https://api.dropboxapi.com/2/files/list?x=1"
    generic = make(oc, "/contacts")
    assert connector_poll_run(instance_id=generic.pk) == 0
    assert "has no base URL" in PollRun.objects.get(connector_instance=generic).error
