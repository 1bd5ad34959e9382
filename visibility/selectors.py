"""Process Visibility's reads for the cockpit and the APIs, one section per part of the app."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet

from meshsite.platform.models import ServiceInstance

from .models import BufferedEvent, Event, FailureState, IngestFailure

# --- Event Acquisition (the monitor) --------------------------------------------------------

ACQUISITION_PAGE_SIZE = 50


@dataclass(frozen=True)
class AcquisitionFilters:
    """The monitor's filters; empty values do not filter. Events are filtered on their
    business `timestamp`, failures (which may have none) on when they were received."""

    definition_id: str = ""
    process_instance_id: str = ""
    event_type: str = ""
    time_from: datetime | None = None
    time_to: datetime | None = None
    unmatched_only: bool = False


@dataclass(frozen=True)
class Listing:
    rows: list[Any]
    page: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.page > 1


def _paged(queryset: QuerySet[Any], page: int) -> Listing:
    # One row past the page says whether there is a next one, without a count(*) of a table
    # that grows by thousands of rows a second.
    page = max(1, page)
    start = (page - 1) * ACQUISITION_PAGE_SIZE
    rows = list(queryset[start:start + ACQUISITION_PAGE_SIZE + 1])
    return Listing(rows=rows[:ACQUISITION_PAGE_SIZE], page=page, has_next=len(rows) > ACQUISITION_PAGE_SIZE)


def _identity_filter(filters: AcquisitionFilters) -> Q:
    q = Q()
    if filters.definition_id:
        q &= Q(definition_id=filters.definition_id)
    if filters.process_instance_id:
        q &= Q(process_instance_id=filters.process_instance_id)
    if filters.event_type:
        q &= Q(event_type=filters.event_type)
    return q


def _time_filter(name: str, filters: AcquisitionFilters) -> Q:
    q = Q()
    if filters.time_from is not None:
        q &= Q(**{f"{name}__gte": filters.time_from})
    if filters.time_to is not None:
        q &= Q(**{f"{name}__lte": filters.time_to})
    return q


def events_search(*, instance: ServiceInstance, filters: AcquisitionFilters, page: int = 1) -> Listing:
    """Acquired events, latest business time first."""
    q = _identity_filter(filters) & _time_filter("timestamp", filters)
    if filters.unmatched_only:
        q &= Q(matched=False)
    queryset = (Event.objects.filter(q, instance=instance)
                .annotate(in_buffer=Exists(BufferedEvent.objects.filter(event_id=OuterRef("pk"))))
                .order_by("-timestamp", "-id"))
    return _paged(queryset, page)


def failures_search(*, instance: ServiceInstance, filters: AcquisitionFilters, state: str = FailureState.OPEN,
                    page: int = 1) -> Listing:
    """Ingestion failures in `state` ("" for all), latest first; `raw` is left unread."""
    q = _identity_filter(filters) & _time_filter("received_at", filters)
    if state:
        q &= Q(state=state)
    queryset = (IngestFailure.objects.filter(q, instance=instance).defer("raw")
                .order_by("-received_at", "-id"))
    return _paged(queryset, page)


# Counting stops here: the event table grows by thousands of rows a second, and an exact
# count(*) of millions of rows on every page view would cost more than the page.
COUNT_CAP = 100_000


@dataclass(frozen=True)
class CappedCount:
    value: int
    capped: bool  # at least `value`


def _capped(queryset: QuerySet[Any]) -> CappedCount:
    value = queryset[:COUNT_CAP + 1].count()
    return CappedCount(min(value, COUNT_CAP), value > COUNT_CAP)


def acquisition_counts(*, instance: ServiceInstance) -> dict[str, CappedCount]:
    """acquired (events stored), in_buffer (not processed yet), unmatched (no active scenario
    takes their definition), open_failures; each counted up to COUNT_CAP."""
    events = Event.objects.filter(instance=instance).values("id")
    return {
        "acquired": _capped(events),
        "in_buffer": _capped(BufferedEvent.objects.filter(instance=instance).values("event_id")),
        "unmatched": _capped(events.filter(matched=False)),
        "open_failures": _capped(IngestFailure.objects.filter(instance=instance, state=FailureState.OPEN).values("id")),
    }


def failure_get(*, instance: ServiceInstance, failure_id: int) -> IngestFailure | None:
    return IngestFailure.objects.filter(instance=instance, pk=failure_id).first()
