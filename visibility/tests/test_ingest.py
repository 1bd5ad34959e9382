"""The Data Acquisition API (`POST /public/v1/events`) through the test client with tokens from
the real token endpoint: 204 stores, re-sent eventIds replace, every refusal names its event
and field and stores nothing of the batch, refusals are recorded with their raw payload, the
roles and the instance's service decide who may push, and one instance never sees another's."""

from __future__ import annotations

import json

import pytest
from django.test import Client as DjangoClient

from meshsite.apihandler import is_api_path
from meshsite.errors import Forbidden
from meshsite.testing import make_instance, mesh_client_for
from visibility.models import BufferedEvent, Event, FailureReason, FailureState, IngestFailure
from visibility.services import events_ingest

from .conftest import EVENTS, event


def errors(answer) -> list[dict]:
    body = json.loads(answer.content)
    assert set(body) == {"detail", "code", "extra"}, body
    return body["extra"]["errors"]


def test_one_event_is_stored_and_answered_204(pv):
    sender = pv()
    answer = sender.post(event())
    assert answer.status_code == 204 and answer.content == b""
    stored = Event.objects.get()
    assert (stored.instance_id, stored.definition_id, stored.process_instance_id, stored.event_type) == (
        sender.instance.pk, "onboard", "3567", "CREATED")
    assert stored.timestamp.isoformat() == "2018-08-25T02:07:42+00:00"
    assert stored.context == {"CANDIDATE_ID": 3361, "COUNTRY": "United Kingdom"}
    assert BufferedEvent.objects.filter(event=stored).exists() and stored.matched is None


def test_an_array_is_stored_whole(pv):
    sender = pv()
    answer = sender.post([event(processInstanceId=n) for n in range(5)])
    assert answer.status_code == 204
    assert sorted(Event.objects.values_list("process_instance_id", flat=True)) == ["0", "1", "2", "3", "4"]


def test_a_timestamp_without_offset_is_utc_and_an_offset_is_kept(pv):
    sender = pv()
    assert sender.post([event(timestamp="2020-01-01T10:00:00", eventId="a"),
                        event(timestamp="2020-01-01T10:00:00+02:00", eventId="b")]).status_code == 204
    times = dict(Event.objects.values_list("event_id", "timestamp"))
    assert times["a"].isoformat() == "2020-01-01T10:00:00+00:00"
    assert times["b"].isoformat() == "2020-01-01T08:00:00+00:00"


def test_a_resent_event_id_replaces_the_event_and_puts_it_back_in_the_buffer(pv):
    sender = pv()
    assert sender.post(event(eventId=42, eventType="CREATED")).status_code == 204
    Event.objects.update(matched=False)
    BufferedEvent.objects.all().delete()  # as processing leaves it
    assert sender.post([event(eventId="42", eventType="HIRED"), event()]).status_code == 204
    replaced = Event.objects.get(event_id="42")
    assert (replaced.event_type, replaced.matched) == ("HIRED", None)
    assert BufferedEvent.objects.filter(event=replaced).exists() and BufferedEvent.objects.count() == 2
    assert Event.objects.count() == 2


def test_the_last_of_an_event_id_in_one_batch_wins(pv):
    sender = pv()
    answer = sender.post([event(eventId="x", eventType="A"), event(eventId="x", eventType="B")])
    assert answer.status_code == 204
    assert list(Event.objects.values_list("event_type", flat=True)) == ["B"]


def test_malformed_json_is_400_and_recorded_with_the_raw_body(pv):
    sender = pv()
    answer = sender.post(b'{"processDefinitionId": "onboard",')
    assert answer.status_code == 400
    assert errors(answer)[0]["reason"] == "invalid_json" and errors(answer)[0]["index"] is None
    failure = IngestFailure.objects.get()
    assert (failure.reason, failure.raw, failure.state) == (
        FailureReason.INVALID_JSON, '{"processDefinitionId": "onboard",', FailureState.OPEN)
    assert not Event.objects.exists()


@pytest.mark.parametrize(("bad", "field", "reason"), [
    ({"processDefinitionId": None}, "processDefinitionId", "missing_field"),
    ({"eventType": ""}, "eventType", "missing_field"),
    ({"timestamp": "25/08/2018 02:07"}, "timestamp", "wrong_type"),
    ({"timestamp": 1535162862}, "timestamp", "wrong_type"),
    ({"context": {"nested": {"a": 1}}}, "context.nested", "wrong_type"),
    ({"context": {"list": [1]}}, "context.list", "wrong_type"),
    ({"processInstanceId": True}, "processInstanceId", "wrong_type"),
    ({"processDefinitionId": 7}, "processDefinitionId", "wrong_type"),
    ({"eventId": {"a": 1}}, "eventId", "wrong_type"),
])
def test_a_bad_event_in_a_batch_is_named_and_nothing_of_the_batch_is_stored(pv, bad, field, reason):
    sender = pv()
    answer = sender.post([event(), {**event(), **bad}, event()])
    assert answer.status_code == 400
    assert errors(answer) == [{"index": 1, "field": field, "reason": reason, "message": errors(answer)[0]["message"]}]
    assert not Event.objects.exists()
    failure = IngestFailure.objects.get()
    assert (failure.position, failure.field, failure.reason) == (1, field, reason)
    assert json.loads(failure.raw) == {**event(), **bad}


def test_every_failing_event_and_field_is_named(pv):
    sender = pv()
    answer = sender.post([event(timestamp="yesterday"), event(), {"eventType": "X"}])
    assert answer.status_code == 400
    named = [(e["index"], e["field"]) for e in errors(answer)]
    assert named == [(0, "timestamp"), (2, "processDefinitionId"), (2, "processInstanceId"), (2, "timestamp")]
    assert json.loads(answer.content)["detail"] == "2 events refused; nothing was stored"
    assert list(IngestFailure.objects.order_by("position").values_list("position", flat=True)) == [0, 2]
    assert not Event.objects.exists()


def test_a_body_that_is_not_an_event_is_400(pv):
    answer = pv().post(b'"hello"')
    assert answer.status_code == 400 and errors(answer)[0]["reason"] == "wrong_type"


def test_more_events_than_the_batch_limit_is_413_and_recorded(pv, settings):
    settings.MESH_PV_MAX_BATCH = 3
    sender = pv()
    answer = sender.post([event()] * 4)
    assert answer.status_code == 413 and errors(answer)[0]["reason"] == "too_large"
    assert IngestFailure.objects.get().reason == FailureReason.TOO_LARGE
    assert not Event.objects.exists()


def test_a_body_over_the_pv_body_limit_is_413_and_recorded_cut(pv, settings):
    settings.MESH_PV_MAX_BODY = 2048
    settings.MESH_PV_MAX_FAILURE_RAW = 1024
    answer = pv().post([event(context={"text": "x" * 3000})])
    assert answer.status_code == 413
    failure = IngestFailure.objects.get()
    assert failure.reason == FailureReason.TOO_LARGE and len(failure.raw) == 1024


def test_a_key_without_pv_event_sender_is_403_and_recorded(pv):
    sender = pv(roles=["PVDeveloper"])
    answer = sender.post(event())
    assert answer.status_code == 403 and json.loads(answer.content)["code"] == "forbidden"
    failure = IngestFailure.objects.get()
    assert failure.reason == FailureReason.NOT_AUTHORISED and json.loads(failure.raw) == event()
    assert failure.instance_id == sender.instance.pk
    assert not Event.objects.exists()


def test_an_event_mesh_key_is_403(pv, mesh):
    sender = pv()
    em = mesh("em1", "a/b/c")
    answer = sender.post(event(), token=em.token)
    assert answer.status_code == 403
    assert not Event.objects.exists() and not IngestFailure.objects.exists()


def test_no_or_a_bad_token_is_401(pv):
    sender = pv()
    anonymous = DjangoClient().post(EVENTS, json.dumps(event()), content_type="application/json")
    assert anonymous.status_code == 401 and "WWW-Authenticate" in anonymous
    assert sender.post(event(), token="not-a-token").status_code == 401
    assert not Event.objects.exists() and not IngestFailure.objects.exists()


@pytest.mark.parametrize(("content_type", "status"), [
    ("application/json", 204), ("application/json; charset=utf-8", 204), ("application/cloudevents+json", 204),
    (None, 204), ("text/plain", 415), ("application/x-www-form-urlencoded", 415),
])
def test_only_json_is_taken(pv, content_type, status):
    assert pv().post(event(), content_type=content_type).status_code == status


def test_options_answers_the_webhook_handshake_without_a_token():
    answer = DjangoClient().options(EVENTS, HTTP_WEBHOOK_REQUEST_ORIGIN="mesh.example.com")
    assert answer.status_code == 200
    assert answer["WebHook-Allowed-Origin"] == "mesh.example.com"
    assert answer["WebHook-Allowed-Rate"] == "*" and answer["Allow"] == "POST, OPTIONS"
    assert DjangoClient().options(EVENTS)["WebHook-Allowed-Origin"] == "*"


def test_other_methods_are_405():
    answer = DjangoClient().get(EVENTS)
    assert answer.status_code == 405 and answer["Allow"] == "POST, OPTIONS"


def test_each_instance_writes_and_sees_only_its_own(pv):
    first, second = pv("pv1"), pv("pv2")
    assert second.post(event(eventId="same")).status_code == 204
    assert first.post(event(eventId="same", eventType="OTHER")).status_code == 204
    assert second.post(b"{").status_code == 400
    assert dict(Event.objects.values_list("instance_id", "event_type")) == {
        first.instance.pk: "OTHER", second.instance.pk: "CREATED"}
    assert list(IngestFailure.objects.values_list("instance_id", flat=True)) == [second.instance.pk]


def test_an_event_mesh_instance_key_cannot_write_into_a_pv_instance(pv, db):
    sender = pv()
    em = mesh_client_for(make_instance("em2", "x/y/z"))
    assert sender.post(event(), token=em.token).status_code == 403
    assert not Event.objects.filter(instance=sender.instance).exists()


def test_text_postgresql_cannot_store_is_a_400_and_its_failure_is_recorded(pv):
    sender = pv()
    body = json.dumps([event(eventType="\ud800"), event(context={"note": "a\x00b"})])
    answer = sender.post(body)
    assert answer.status_code == 400
    assert [(e["index"], e["field"]) for e in errors(answer)] == [(0, "eventType"), (1, "context.note")]
    assert IngestFailure.objects.count() == 2 and not Event.objects.exists()
    assert "\x00" not in "".join(IngestFailure.objects.values_list("raw", flat=True))


def test_the_service_refuses_an_instance_of_another_service(db):
    with pytest.raises(Forbidden):
        events_ingest(instance=make_instance("em3", "q/r/s"), body=json.dumps(event()).encode())
    assert not Event.objects.exists()


def test_the_events_path_is_a_lean_stack_api_path_with_json_errors():
    assert is_api_path("/public/v1/events")
    missing = DjangoClient().get("/public/v1/nothing")
    assert missing.status_code == 404 and missing["Content-Type"] == "application/json"


def test_a_retried_refusal_is_the_failure_already_open(pv):
    sender = pv()
    bad = [event(), {**event(), "timestamp": "never"}]
    for _ in range(3):  # an Event Mesh webhook retrying the same push
        assert sender.post(bad).status_code == 400
    assert sender.post(b"{").status_code == 400
    assert sender.post(b"{").status_code == 400
    assert IngestFailure.objects.count() == 2
    IngestFailure.objects.update(state=FailureState.DISCARDED)
    assert sender.post(bad).status_code == 400
    assert IngestFailure.objects.filter(state=FailureState.OPEN).count() == 1
