"""The polling event source: every refresh interval, ask the provider what changed and turn
the changed records into notifications.

The schedule is in the database (`ConnectorInstance.next_poll_at`), so a changed interval
needs no restart. `polls_due_start`, called by the scheduler's tick, leases each due instance
with a conditional UPDATE (two schedulers never start one instance twice) and sends
`connector_poll` after the commit; `connector_poll_run` polls every object type of the
instance's `event.poller.configuration`, one after the other:

- The URL's date macros expand to the window start: the last poll's start (first poll: now
  minus the refresh interval) minus `pollDelay`, in the configured timezone. A relative URL
  is joined to the element's base URL. Requests go through the SSRF guard, never inside a
  transaction, with the instance's provider credentials (credentials.py); an OAuth2 access
  token the provider refuses (401) is refreshed once per poll and the request sent again.
- Records: a JSON array body, or the first array under `<objectType>`, `data`, `results`,
  `records` or `items` of an object body, in that order.
- Paging: a next-page token (the `Elements-Next-Page-Token` header, or a string `nextPage`
  in an object body) is followed as the `nextPage` query parameter. Otherwise, with
  `pageSize`, the requests carry `page` (from 1) and `pageSize`, and a full page asks for the
  next one. At most MESH_CONNECTOR_POLL_MAX_PAGES pages: the run then says so in its error
  but still counts as succeeded, since repeating the window would fetch the same pages.
- Dates (`datesConfiguration`): formats `iso8601` (the default; a date without an offset is
  in the configured timezone), `epoch` (seconds) or `milliseconds`. CREATED when created and
  updated dates are within `createdCheckTolerance` seconds (default 0), else UPDATED; without
  a created date, UPDATED. An event's date is the record's updated date (the poll's start
  without an updated date field).
- `filterByUpdatedDate` drops records updated before the window start; `filterByCurrentDate`
  drops records updated after the poll started (the next window reports them).
- No duplicates: `PollState.seen` maps objectId to the updated date last reported; a record
  is reported when unseen or its updated date differs, and `seen` keeps the
  MESH_CONNECTOR_POLL_SEEN_LIMIT most recently updated entries.

A poll that fails (connection, non-2xx, not JSON, no records array, a bad id or date) is
logged as a failed PollRun and leaves the state as it was, so the next poll asks for the same
window again and nothing is lost; the task never raises. Either way the lease is released and
the next poll is due one refresh interval later.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .. import dispatch
from ..models import ConnectorInstance, NotificationSource, PollRun, PollState
from ..webhooks import netguard
from . import credentials, macros
from .elements import EventType, element
from .emit import notifications_emit
from .instances import POLLER, REFRESH_INTERVAL
from .normalize import _MISSING, Event, NotNormalizable, iso_date, lookup, to_iso

log = logging.getLogger(__name__)

RECORD_KEYS = ("data", "results", "records", "items")
TOKEN_HEADER = "elements-next-page-token"
ERROR_LENGTH = 500


class PollFailed(Exception):
    """A poll of one object type that cannot be reported; `reason` goes on its PollRun."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason[:ERROR_LENGTH]


# --- the schedule --------------------------------------------------------------------------


def is_polling(instance: ConnectorInstance) -> bool:
    return instance.events_enabled() and instance.vendor_type() == "polling"


def refresh_interval(instance: ConnectorInstance) -> timedelta:
    return timedelta(minutes=int(instance.configuration.get(REFRESH_INTERVAL) or 1))


def next_poll(instance: ConnectorInstance, now: datetime) -> datetime | None:
    """When the instance polls next after `now`; None when it does not poll."""
    return now + refresh_interval(instance) if is_polling(instance) else None


def _lease(instance: ConnectorInstance) -> timedelta:
    # The longest a poll can take: every request of every object type runs to its timeout.
    # (+2: one token refresh per poll, and the request it repeats.)
    requests = settings.MESH_CONNECTOR_POLL_MAX_PAGES * max(len(instance.configuration.get(POLLER) or {}), 1) + 2
    return timedelta(seconds=settings.MESH_CONNECTOR_POLL_TIMEOUT * requests)


def _lease_take(instance: ConnectorInstance, now: datetime) -> bool:
    # Conditional on the lease being free: of two schedulers, one UPDATE matches the row.
    free = Q(poll_lease_until__isnull=True) | Q(poll_lease_until__lte=now)
    return ConnectorInstance.objects.filter(free, pk=instance.pk, next_poll_at__lte=now).update(
        poll_lease_until=now + _lease(instance)) == 1


def polls_due_start(now: datetime | None = None) -> int:
    """Lease every instance whose poll is due and send its `connector_poll` after the commit;
    returns how many were started. An instance that no longer polls is taken off the schedule."""
    now = now or timezone.now()
    started = 0
    with transaction.atomic():
        for instance in ConnectorInstance.objects.filter(next_poll_at__lte=now).order_by("next_poll_at"):
            if not is_polling(instance):
                ConnectorInstance.objects.filter(pk=instance.pk).update(next_poll_at=None)
            elif _lease_take(instance, now):
                transaction.on_commit(functools.partial(dispatch.connector_poll, instance.pk))
                started += 1
    return started


def _reschedule(instance_id: int) -> None:
    # Read again: the configuration may have changed while the poll ran.
    fresh = ConnectorInstance.objects.filter(pk=instance_id).first()
    if fresh is not None:
        ConnectorInstance.objects.filter(pk=instance_id).update(
            poll_lease_until=None, next_poll_at=next_poll(fresh, timezone.now()))


# --- one poll ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One object type's poller configuration, with its defaults applied."""

    object_type: str
    url: str
    id_field: str
    updated_field: str
    updated_format: str
    created_field: str
    created_format: str
    timezone: tzinfo
    tolerance: timedelta
    page_size: int | None
    poll_delay: timedelta
    filter_updated: bool
    filter_current: bool


def _zone(name: str) -> tzinfo:
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PollFailed(f"timezone {name!r} is not known") from None


def spec_of(object_type: str, config: dict[str, Any]) -> Spec:
    dates = config.get("datesConfiguration") or {}
    return Spec(
        object_type=object_type, url=config["url"], id_field=config.get("idField") or "id",
        updated_field=dates.get("updatedDateField", ""), updated_format=dates.get("updatedDateFormat", ""),
        created_field=dates.get("createdDateField", ""), created_format=dates.get("createdDateFormat", ""),
        timezone=_zone(dates.get("timezone", "")),
        tolerance=timedelta(seconds=config.get("createdCheckTolerance", 0)),
        page_size=config.get("pageSize"), poll_delay=timedelta(seconds=config.get("pollDelay", 0)),
        filter_updated=bool(config.get("filterByUpdatedDate")),
        filter_current=bool(config.get("filterByCurrentDate")),
    )


def _absolute(instance: ConnectorInstance, url: str) -> str:
    if urlsplit(url).scheme:
        return url
    definition = element(instance.element_key)
    if definition is None or not definition.base_url:
        raise PollFailed(f"url {url!r} is relative and element {instance.element_key!r} has no base URL")
    return definition.base_url.rstrip("/") + "/" + url.lstrip("/")


def _with_params(url: str, params: dict[str, str]) -> str:
    # Appended, not re-encoded: the vendor gets the configured query exactly as expanded.
    if not params:
        return url
    parts = urlsplit(url)
    added = urlencode(params)
    return urlunsplit(parts._replace(query=f"{parts.query}&{added}" if parts.query else added))


def _send(session: netguard.Session, url: str, auth: credentials.ProviderAuth) -> netguard.GuardedResponse:
    try:
        return session.request("GET", url, headers={"Accept": "application/json", **auth.headers},
                               timeout=settings.MESH_CONNECTOR_POLL_TIMEOUT)
    except netguard.DeliveryError as error:
        raise PollFailed(f"GET {url}: {error}") from None
    except ValueError as error:  # InvalidURL, BlockedAddress
        raise PollFailed(f"GET {url}: {error}") from None


def _get(session: netguard.Session, url: str, auth: credentials.ProviderAuth) -> netguard.GuardedResponse:
    response = _send(session, url, auth)
    if response.status_code == 401:
        try:
            again = auth.refused()
        except credentials.TokenRequestFailed as failure:
            raise PollFailed(f"GET {url}: HTTP 401, and the token refresh failed: {failure.reason}") from None
        if again:
            response = _send(session, url, auth)
    if not 200 <= response.status_code < 300:
        raise PollFailed(f"GET {url}: HTTP {response.status_code}")
    return response


def records_of(body: Any, object_type: str) -> list[dict[str, Any]]:
    """The records of a page: the array body, or the first array under a common key."""
    found: Any = body
    if isinstance(body, dict):
        found = next((body[k] for k in (object_type, *RECORD_KEYS) if isinstance(body.get(k), list)), None)
    if not isinstance(found, list):
        raise PollFailed(f"the answer has no records array (a JSON array, or one under {object_type!r},"
                         f" {', '.join(map(repr, RECORD_KEYS))})")
    if not all(isinstance(record, dict) for record in found):
        raise PollFailed("a record is not a JSON object")
    return found


def _page_token(response: netguard.GuardedResponse, body: Any) -> str:
    token = response.headers.get(TOKEN_HEADER) or (body.get("nextPage") if isinstance(body, dict) else None)
    return token if isinstance(token, str) else ""


@dataclass(frozen=True)
class Fetched:
    records: list[dict[str, Any]]
    note: str  # why paging stopped early, or ""


def _pages(session: netguard.Session, spec: Spec, url: str,
           auth: credentials.ProviderAuth) -> Iterator[tuple[list[dict[str, Any]], bool]]:
    """Each page's records, and whether the paging rule asks for another page."""
    sized = {"pageSize": str(spec.page_size)} if spec.page_size else {}
    params = {"page": "1", **sized} if sized else {}
    page, by_token = 1, False
    while True:
        response = _get(session, _with_params(url, params), auth)
        try:
            body = json.loads(response.body)
        except (ValueError, RecursionError):
            raise PollFailed(f"the answer of {url} is not JSON") from None
        records = records_of(body, spec.object_type)
        token = _page_token(response, body)
        # Once a vendor pages by token, only a token says there is more: a full last page is
        # no reason to guess a page number it never offered.
        by_token = by_token or bool(token)
        more = bool(token) if by_token else spec.page_size is not None and len(records) >= spec.page_size
        yield records, more
        page += 1
        params = {"nextPage": token, **sized} if by_token else {"page": str(page), **sized}


def fetch(session: netguard.Session, spec: Spec, url: str, auth: credentials.ProviderAuth) -> Fetched:
    records: list[dict[str, Any]] = []
    limit = settings.MESH_CONNECTOR_POLL_MAX_PAGES
    for number, (page, more) in enumerate(_pages(session, spec, url, auth), start=1):
        records.extend(page)
        if not more:
            return Fetched(records, "")
        if number >= limit:
            return Fetched(records, f"stopped after {limit} pages (MESH_CONNECTOR_POLL_MAX_PAGES)")
    return Fetched(records, "")  # pragma: no cover - _pages never ends by itself


# --- from records to events ----------------------------------------------------------------


def _date(record: dict[str, Any], field: str, fmt: str, zone: tzinfo) -> datetime | None:
    """The record's date at `field` (None without a field), or PollFailed."""
    if not field:
        return None
    value = lookup(record, field)
    if value is _MISSING or value is None:
        raise PollFailed(f"a record has no date at {field!r}")
    try:
        return _parse_date(value, fmt.lower(), zone)
    except (NotNormalizable, ValueError, OverflowError, OSError, TypeError):
        raise PollFailed(f"date {value!r:.40} at {field!r} is not a {fmt or 'ISO 8601'} date") from None


def _parse_date(value: Any, fmt: str, zone: tzinfo) -> datetime:
    if fmt in ("epoch", "seconds", "s"):
        return datetime.fromtimestamp(float(value), UTC)
    if fmt in ("milliseconds", "ms", "epoch_ms"):
        return datetime.fromtimestamp(float(value) / 1000, UTC)
    if fmt not in ("", "iso", "iso8601", "iso 8601"):
        raise ValueError(f"unknown date format {fmt!r}")
    if isinstance(value, str):
        moment = datetime.fromisoformat(value)
        return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment
    return datetime.fromisoformat(iso_date(value))  # an epoch number, as webhooks allow


def _object_id(record: dict[str, Any], path: str) -> str:
    value = lookup(record, path)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PollFailed(f"a record has no string or integer id at {path!r}")
    return str(value)


@dataclass(frozen=True)
class Change:
    object_id: str
    updated: str  # ISO, "" without an updated date field: what `seen` remembers
    event: Event
    record: dict[str, Any]


def _change(record: dict[str, Any], spec: Spec, instance: ConnectorInstance, started: datetime) -> Change:
    updated = _date(record, spec.updated_field, spec.updated_format, spec.timezone)
    created = _date(record, spec.created_field, spec.created_format, spec.timezone)
    event_type = EventType.UPDATED
    if created is not None and (updated is None or abs(updated - created) <= spec.tolerance):
        event_type = EventType.CREATED
    object_id = _object_id(record, spec.id_field)
    event = {"objectType": spec.object_type, "objectId": object_id, "eventType": event_type.value,
             "elementKey": instance.element_key, "date": to_iso(updated or started), "pollDate": to_iso(started)}
    return Change(object_id, to_iso(updated) if updated else "", event, record)


def _in_window(change: Change, spec: Spec, since: datetime, started: datetime) -> bool:
    if not change.updated:
        return True
    updated = datetime.fromisoformat(change.updated)
    if spec.filter_updated and updated < since:
        return False
    return not (spec.filter_current and updated > started)


def changes_of(records: list[dict[str, Any]], spec: Spec, *, instance: ConnectorInstance, seen: dict[str, str],
               since: datetime, started: datetime) -> list[Change]:
    """The records to report: in the window, and unseen or updated since they were reported.
    A record listed twice (it moved between pages while paging) is reported once."""
    changes: dict[str, Change] = {}
    for record in records:
        change = _change(record, spec, instance, started)
        if _in_window(change, spec, since, started) and seen.get(change.object_id) != change.updated:
            changes[change.object_id] = change
    return list(changes.values())


def seen_after(seen: dict[str, str], changes: list[Change]) -> dict[str, str]:
    merged = {**seen, **{change.object_id: change.updated for change in changes}}
    limit = settings.MESH_CONNECTOR_POLL_SEEN_LIMIT
    if len(merged) <= limit:
        return merged
    # ISO dates of one shape sort as text; the oldest versions are forgotten first.
    return dict(sorted(merged.items(), key=lambda item: item[1])[-limit:])


# --- the service ---------------------------------------------------------------------------


def _window_start(state: PollState, spec: Spec, instance: ConnectorInstance, started: datetime) -> datetime:
    last = state.last_poll_at or started - refresh_interval(instance)
    return last - spec.poll_delay


def _run_log(instance: ConnectorInstance, spec_name: str, started: datetime, clock: float, **fields: Any) -> None:
    PollRun.objects.create(connector_instance=instance, object_type=spec_name, started_at=started,
                           duration_ms=(time.monotonic() - clock) * 1000, **fields)


def _report(instance: ConnectorInstance, spec: Spec, fetched: Fetched, *, since: datetime, started: datetime,
            clock: float) -> int:
    """One transaction: the notifications, the new state and the run's log line."""
    with transaction.atomic():
        state = PollState.objects.select_for_update().get(connector_instance=instance, object_type=spec.object_type)
        changes = changes_of(fetched.records, spec, instance=instance, seen=state.seen, since=since, started=started)
        notifications_emit(instance=instance, events=[c.event for c in changes],
                           raw={spec.object_type: [c.record for c in changes]}, source=NotificationSource.POLLING)
        state.last_poll_at = started
        state.seen = seen_after(state.seen, changes)
        state.save(update_fields=["last_poll_at", "seen"])
        _run_log(instance, spec.object_type, started, clock, succeeded=True, records=len(fetched.records),
                 events_count=len(changes), error=fetched.note)
    return len(changes)


def _poll_object_type(instance: ConnectorInstance, name: str, config: dict[str, Any],
                      session: netguard.Session, auth: credentials.ProviderAuth, started: datetime) -> int:
    clock = time.monotonic()
    try:
        state, _ = PollState.objects.get_or_create(connector_instance=instance, object_type=name)
        spec = spec_of(name, config)
        since = _window_start(state, spec, instance, started)
        url = macros.expand(_absolute(instance, spec.url), at=since, timezone=spec.timezone)
        fetched = fetch(session, spec, url, auth)
        # A bad record raises PollFailed inside _report's transaction: nothing of it stays.
        return _report(instance, spec, fetched, since=since, started=started, clock=clock)
    except PollFailed as failure:
        reason = failure.reason
    except ValueError as error:  # a malformed macro or format in the URL
        reason = str(error)[:ERROR_LENGTH]
    except Exception as error:  # never out of the task: the next tick retries the window
        log.exception("poll of connector instance %s, %s failed", instance.pk, name)
        reason = f"internal error: {type(error).__name__}: {error}"[:ERROR_LENGTH]
    _run_log(instance, name, started, clock, succeeded=False, error=reason)
    return 0


def connector_poll_run(*, instance_id: int) -> int:
    """Poll every object type of the instance once; returns the events reported. Releases the
    lease and schedules the next poll, whatever happened."""
    instance = ConnectorInstance.objects.filter(pk=instance_id).first()
    if instance is None:
        return 0
    started = timezone.now()
    reported = 0
    try:
        if is_polling(instance):
            auth = credentials.ProviderAuth(instance)
            with netguard.Session() as session:
                for name, config in (instance.configuration.get(POLLER) or {}).items():
                    reported += _poll_object_type(instance, name, config, session, auth, started)
    finally:
        _reschedule(instance_id)
    return reported
