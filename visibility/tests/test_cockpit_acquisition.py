"""The Event Acquisition monitor through Django's test client: counts, filters that narrow the
events and failures, a failure's raw payload, re-submitting it corrected (stored, closed) or
still bad (the problem beside the payload, still open), discarding it; the PVAdmin role is
needed, and another subaccount's instance or another instance's failure is not found."""

from __future__ import annotations

import html
import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from meshsite.platform.models import Entitlement, Subaccount
from meshsite.platform.services import instance_create
from visibility import selectors
from visibility.models import BufferedEvent, Event, FailureState, IngestFailure, RoleGrant
from visibility.services import failure_record

from .conftest import Sender, event, pv_instance_create, sender_for


def text(answer: Any) -> str:
    return html.unescape(answer.content.decode())


@pytest.fixture
def sender(pv) -> Sender:
    return pv("pv1")


def monitor(sender: Sender, path: str = "") -> str:
    return f"/subaccounts/{sender.instance.subaccount_id}/process-visibility/{sender.instance.pk}/acquisition/{path}"


def rows(answer: Any, kind: str) -> int:
    return text(answer).count(f"<tr data-{kind}=")


def test_the_monitor_counts_and_lists_events(person, sender):
    assert sender.post([event(processInstanceId=n) for n in range(3)]).status_code == 204
    Event.objects.filter(process_instance_id="0").update(matched=False)
    BufferedEvent.objects.filter(event__process_instance_id="0").delete()
    assert sender.post(b"{").status_code == 400
    page = person("ada", "administrator").get(monitor(sender))
    assert page.status_code == 200
    body = text(page)
    for name, count in (("acquired", 3), ("in_buffer", 2), ("unmatched", 1), ("open_failures", 1)):
        assert f'<b data-count="{name}">{count}</b>' in body
    assert rows(page, "event") == 3 and 'data-state="unmatched">unknown definition' in body
    assert "Event Acquisition" in body  # the app's tab, rendered without the other tabs' pages


@pytest.mark.parametrize(("query", "expected"), [
    ("definition_id=ship", 1),
    ("process_instance_id=7", 2),
    ("event_type=HIRED", 1),
    ("time_from=2021-01-01+00:00", 1),
    ("time_to=2019-01-01+00:00", 3),
    ("unmatched=on", 1),
    ("definition_id=ship&event_type=HIRED", 0),
])
def test_filters_narrow_the_events(person, sender, query, expected):
    assert sender.post([
        event(processInstanceId=7), event(processInstanceId=7, eventType="HIRED"), event(processInstanceId=8),
        event(processDefinitionId="ship", processInstanceId=9, timestamp="2022-03-01T00:00:00Z"),
    ]).status_code == 204
    Event.objects.filter(definition_id="ship").update(matched=False)
    BufferedEvent.objects.filter(event__definition_id="ship").delete()
    page = person("ada", "administrator").get(monitor(sender) + "?show=events&" + query)
    assert page.status_code == 200 and rows(page, "event") == expected


def test_a_bad_filter_time_is_shown_beside_its_field(person, sender):
    page = person("ada", "administrator").get(monitor(sender) + "?time_from=yesterday")
    assert page.status_code == 400 and 'data-field="time_from"' in text(page)


def test_filters_narrow_the_failures_and_their_state(person, sender):
    assert sender.post([event(), {**event(), "timestamp": "later"}]).status_code == 400
    assert sender.post({**event(processDefinitionId="ship"), "eventType": None}).status_code == 400
    admin = person("ada", "administrator")
    assert rows(admin.get(monitor(sender) + "?show=failures"), "failure") == 2
    assert rows(admin.get(monitor(sender) + "?show=failures&definition_id=ship"), "failure") == 1
    IngestFailure.objects.filter(definition_id="ship").update(state=FailureState.DISCARDED)
    assert rows(admin.get(monitor(sender) + "?show=failures&state=open"), "failure") == 1
    assert rows(admin.get(monitor(sender) + "?show=failures&state="), "failure") == 2


def test_events_are_paged_by_fifty(person, sender):
    assert sender.post([event(processInstanceId=n) for n in range(60)]).status_code == 204
    admin = person("ada", "administrator")
    first = admin.get(monitor(sender))
    assert rows(first, "event") == 50 and 'rel="next"' in text(first)
    second = admin.get(monitor(sender) + "?show=events&page=2")
    assert rows(second, "event") == 10 and 'rel="prev"' in text(second) and 'rel="next"' not in text(second)


def failure_of(sender: Sender) -> IngestFailure:
    assert sender.post([event(eventId="a"), {**event(eventId="b"), "timestamp": "25/08/2018"}]).status_code == 400
    return IngestFailure.objects.get()


def test_a_failure_shows_its_reason_and_raw_payload(person, sender):
    failure = failure_of(sender)
    page = person("ada", "administrator").get(monitor(sender, f"failures/{failure.pk}/"))
    assert page.status_code == 200
    body = text(page)
    assert 'data-reason="wrong_type"' in body and "<code>timestamp</code>" in body and "event 1 of the array" in body
    assert json.loads(body.split('class="json">', 1)[1].split("</textarea>", 1)[0]) == json.loads(failure.raw)


def test_a_corrected_failure_is_stored_and_closed(person, sender):
    failure = failure_of(sender)
    corrected = json.dumps({**json.loads(failure.raw), "timestamp": "2018-08-25T00:00:00Z"})
    answer = person("ada", "administrator").post(monitor(sender, f"failures/{failure.pk}/resubmit"),
                                                 {"raw": corrected})
    assert answer.status_code == 302
    failure.refresh_from_db()
    assert failure.state == FailureState.RESUBMITTED and failure.resolved_at is not None
    stored = Event.objects.get(event_id="b")
    assert stored.instance_id == sender.instance.pk and stored.timestamp.isoformat() == "2018-08-25T00:00:00+00:00"
    assert IngestFailure.objects.count() == 1


def test_a_still_bad_resubmit_shows_the_problem_and_stays_open(person, sender):
    failure = failure_of(sender)
    still_bad = json.dumps({**json.loads(failure.raw), "timestamp": "soon", "context": {"x": {"y": 1}}})
    answer = person("ada", "administrator").post(monitor(sender, f"failures/{failure.pk}/resubmit"),
                                                 {"raw": still_bad})
    assert answer.status_code == 200
    problems = text(answer).split("data-problems>", 1)[1].split("</ul>", 1)[0]
    assert "<code>timestamp</code>" in problems and "<code>context.x</code>" in problems
    assert '"soon"' in text(answer)  # the edited payload stays in the textarea
    failure.refresh_from_db()
    assert failure.state == FailureState.OPEN and not Event.objects.exists()
    assert IngestFailure.objects.count() == 1  # no new failure for the attempt


def test_a_failure_is_discarded_once(person, sender):
    failure = failure_of(sender)
    admin = person("ada", "administrator")
    assert admin.post(monitor(sender, f"failures/{failure.pk}/discard")).status_code == 302
    failure.refresh_from_db()
    assert failure.state == FailureState.DISCARDED
    again = admin.post(monitor(sender, f"failures/{failure.pk}/resubmit"), {"raw": failure.raw})
    assert "already discarded" in text(again) and not Event.objects.exists()


def test_a_pv_admin_grant_lets_a_viewer_use_the_monitor(person, sender):
    failure = failure_of(sender)
    viewer = person("vic", "viewer")
    assert viewer.get(monitor(sender)).status_code == 403
    assert viewer.post(monitor(sender, f"failures/{failure.pk}/discard")).status_code == 403
    RoleGrant.objects.create(instance=sender.instance, role="PVOperator", user=viewer_user("vic"))
    assert viewer.get(monitor(sender)).status_code == 403
    RoleGrant.objects.create(instance=sender.instance, role="PVAdmin", user=viewer_user("vic"))
    assert viewer.get(monitor(sender)).status_code == 200
    assert viewer.post(monitor(sender, f"failures/{failure.pk}/discard")).status_code == 302


def viewer_user(name: str) -> Any:
    return get_user_model().objects.get(username=name)


def test_an_outsider_does_not_see_the_subaccount(person, sender):
    assert person("otto").get(monitor(sender)).status_code == 404


def test_another_subaccounts_instance_is_not_found(person, sender):
    other = Subaccount.objects.create(name="other")
    Entitlement.objects.create(subaccount=other, service="process-visibility", plan="standard", quota=1)
    theirs = sender_for(instance_create(subaccount=other, service="process-visibility", plan="standard",
                                        name="theirs"), key="t")
    assert theirs.post(b"{").status_code == 400
    admin = person("ada", "administrator")
    mine = sender.instance.subaccount_id
    assert admin.get(f"/subaccounts/{mine}/process-visibility/{theirs.instance.pk}/acquisition/").status_code == 404
    failure = IngestFailure.objects.get(instance=theirs.instance)
    assert admin.get(monitor(sender, f"failures/{failure.pk}/")).status_code == 404
    assert admin.post(monitor(sender, f"failures/{failure.pk}/discard")).status_code == 404
    assert rows(admin.get(monitor(sender) + "?show=failures&state="), "failure") == 0


def test_another_instances_failures_are_not_listed(person, sender, subaccount):
    other = sender_for(pv_instance_create("pv2", subaccount), key="o")
    assert other.post(b"[1]").status_code == 400
    assert other.post(event()).status_code == 204
    page = person("ada", "administrator").get(monitor(sender) + "?show=failures")
    assert rows(page, "failure") == 0 and '<b data-count="open_failures">0</b>' in text(page)
    assert '<b data-count="acquired">0</b>' in text(page)


def test_a_payload_with_a_lone_surrogate_escape_is_shown_as_received(person, sender):
    raw = '{"eventType": "\\ud800"}'
    failure = failure_record(instance=sender.instance, reason="wrong_type", detail="d", raw=raw)
    page = person("ada", "administrator").get(monitor(sender, f"failures/{failure.pk}/"))
    assert page.status_code == 200 and raw in text(page)


def test_counts_stop_at_the_cap(person, sender, monkeypatch):
    monkeypatch.setattr(selectors, "COUNT_CAP", 2)
    assert sender.post([event(processInstanceId=n) for n in range(3)]).status_code == 204
    body = text(person("ada", "administrator").get(monitor(sender)))
    assert '<b data-count="acquired">2+</b>' in body and '<b data-count="unmatched">0</b>' in body
