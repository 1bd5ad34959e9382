"""The connectors' event log: `/elements/api-v2/instances/{id}/events[...]` (notifications,
their events and delivery attempts; the queued ones and their redelivery), `…/vendor-events`
(what providers posted, failed ones with the reason) and `…/polls`."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.response import Response

from meshsite.errors import Invalid, NotFound

from ..connectors import queued, selectors
from ..connectors.selectors import LogEntry
from ..models import DeliveryAttempt, PollRun, VendorEventStatus
from . import connectors_schema as doc
from .connectors import ConnectorsView

MAX_PAGE = 200
NEXT_PAGE = "Elements-Next-Page-Token"


def _int(request: Request, name: str, default: int | None, maximum: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1 or (maximum is not None and int(raw) > maximum):
        raise Invalid(f"{name} must be a whole number between 1 and {maximum or 'any'}")
    return int(raw)


def _attempt(attempt: DeliveryAttempt) -> dict[str, Any]:
    return {"attemptedDate": attempt.attempted_at.isoformat(), "succeeded": attempt.succeeded,
            "statusCode": attempt.status_code, "latencyMs": round(attempt.latency_ms, 1), "error": attempt.error,
            "response": attempt.response_excerpt}


def _entry(entry: LogEntry, *, full: bool) -> dict[str, Any]:
    notification = entry.notification
    answer: dict[str, Any] = {
        "id": str(notification.notification_id), "createdDate": notification.created_at.isoformat(),
        "source": notification.source, "eventsCount": notification.events_count, "events": entry.events,
        "state": entry.state, "attempts": len(entry.attempts),
        "nextAttemptDate": entry.next_attempt_at.isoformat() if entry.next_attempt_at else None,
        "topicDeliveries": notification.topic_deliveries, "topicError": notification.topic_error,
        "lastAttempt": _attempt(entry.attempts[-1]) if entry.attempts else None,
    }
    if full:
        answer["deliveryAttempts"] = [_attempt(attempt) for attempt in entry.attempts]
        answer["notification"] = entry.body
    return answer


@doc.EVENT_LIST
class EventListView(ConnectorsView):
    def get(self, request: Request, pk: int) -> Response:
        instance = self.connector(pk)
        size = _int(request, "pageSize", 50, MAX_PAGE) or 50
        page = list(selectors.notifications_of(instance, before=_int(request, "nextPage", None))[:size + 1])
        response = Response([_entry(e, full=False) for e in selectors.log_entries(instance, page[:size])])
        if len(page) > size:
            response[NEXT_PAGE] = str(page[size - 1].pk)
        return response


@doc.EVENT
class EventView(ConnectorsView):
    def get(self, request: Request, pk: int, notification_id: str) -> Response:
        instance = self.connector(pk)
        found = selectors.notification_get(instance, notification_id)
        if found is None:
            raise NotFound(f"Notification {notification_id} not found")
        return Response(_entry(selectors.log_entries(instance, [found])[0], full=True))


@doc.QUEUED_LIST
class QueuedListView(ConnectorsView):
    def get(self, request: Request, pk: int) -> Response:
        instance = self.connector(pk)
        found = list(selectors.notifications_queued(instance)[:settings.MESH_CONNECTOR_MAX_LISTED])
        return Response([_entry(e, full=False) for e in selectors.log_entries(instance, found)])


@doc.REDELIVER
class RedeliverView(ConnectorsView):
    def post(self, request: Request, pk: int) -> Response:
        instance = self.connector(pk)
        body = request.data if isinstance(request.data, dict) else {}
        ids = body.get("ids")
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            raise Invalid("ids must be a list of notification ids")
        return Response({"redelivered": queued.notifications_redeliver(instance=instance, notification_ids=ids)})


@doc.VENDOR_EVENT_LIST
class VendorEventListView(ConnectorsView):
    def get(self, request: Request, pk: int) -> Response:
        status = request.query_params.get("status")
        if status is not None and status not in VendorEventStatus.values:
            raise Invalid(f"status must be one of {', '.join(VendorEventStatus.values)}")
        found = selectors.vendor_events_of(self.connector(pk), status=status)[:MAX_PAGE]
        return Response([{
            "id": row.pk, "receivedDate": row.received_at.isoformat(), "status": row.status, "reason": row.reason,
            "eventsCount": row.events_count, "contentType": row.content_type,
            "body": bytes(row.body)[:settings.MESH_CONNECTOR_MAX_SHOWN_BODY].decode("utf-8", "replace"),
        } for row in found])


def _poll(run: PollRun) -> dict[str, Any]:
    return {"objectType": run.object_type, "startedDate": run.started_at.isoformat(), "succeeded": run.succeeded,
            "records": run.records, "eventsCount": run.events_count, "durationMs": round(run.duration_ms, 1),
            "error": run.error}


@doc.POLL_LIST
class PollListView(ConnectorsView):
    def get(self, request: Request, pk: int) -> Response:
        return Response([_poll(run) for run in selectors.poll_runs_of(self.connector(pk))[:MAX_PAGE]])
