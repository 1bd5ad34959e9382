"""The Event Acquisition monitor (PVAdmin): the events acquired and the ingestion failures,
filtered; a failure's raw payload, corrected and re-submitted or discarded.

Its POSTs are gated by the PVAdmin role rather than by the subaccount's administrator role,
since the role is what Process Visibility grants for this page (a viewer of the subaccount
may hold it); hence `cockpit_page(post_writes=False)`.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_POST

from meshsite import jsonlimit
from meshsite.cockpit.access import Page, cockpit_page
from meshsite.errors import MeshError, NotFound
from meshsite.platform.models import ServiceInstance

from ..models import FailureState, IngestFailure, PVRole
from ..selectors import AcquisitionFilters, acquisition_counts, events_search, failure_get, failures_search
from ..services import failure_discard, failure_resubmit
from .common import pv_instance, pv_render

SHOW = (("events", "Acquired events"), ("failures", "Failures"))
STATES = (("open", "Open"), ("resubmitted", "Re-submitted"), ("discarded", "Discarded"), ("", "All"))


class FilterForm(forms.Form):
    show = forms.ChoiceField(choices=SHOW, required=False, widget=forms.HiddenInput)
    definition_id = forms.CharField(max_length=255, required=False, label="Process definition id")
    process_instance_id = forms.CharField(max_length=255, required=False, label="Process instance id")
    event_type = forms.CharField(max_length=255, required=False, label="Event type")
    time_from = forms.DateTimeField(required=False, label="From", help_text="e.g. 2024-05-01 10:00 (UTC)")
    time_to = forms.DateTimeField(required=False, label="To")
    unmatched = forms.BooleanField(required=False, label="Not taken by any scenario")
    state = forms.ChoiceField(choices=STATES, required=False, label="Failure state")

    def filters(self) -> AcquisitionFilters:
        data = self.cleaned_data if self.is_valid() else {}
        return AcquisitionFilters(
            definition_id=(data.get("definition_id") or "").strip(),
            process_instance_id=(data.get("process_instance_id") or "").strip(),
            event_type=(data.get("event_type") or "").strip(), time_from=data.get("time_from"),
            time_to=data.get("time_to"), unmatched_only=bool(data.get("unmatched")),
        )


def _page_number(request: HttpRequest) -> int:
    raw = request.GET.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < len(raw) < 7 else 1


def _instance(request: HttpRequest, page: Page, instance_id: Any) -> ServiceInstance:
    return pv_instance(request, page, instance_id, role=PVRole.ADMIN)


@cockpit_page()
@require_GET
def acquisition(request: HttpRequest, page: Page, instance_id: Any) -> HttpResponse:
    instance = _instance(request, page, instance_id)
    form = FilterForm(request.GET or None, initial={"state": FailureState.OPEN})
    show = request.GET.get("show") if request.GET.get("show") in dict(SHOW) else "events"
    filters, number = form.filters(), _page_number(request)
    if show == "failures":
        state = request.GET.get("state", FailureState.OPEN)
        listing = failures_search(instance=instance, filters=filters, state=state, page=number)
    else:
        listing = events_search(instance=instance, filters=filters, page=number)
    query = request.GET.copy()
    query.pop("page", None)
    return pv_render(request, page, instance, "acquisition", "visibility/acquisition.html", {
        "form": form, "show": show, "listing": listing, "counts": acquisition_counts(instance=instance),
        "query": query.urlencode(), "shows": SHOW,
    }, status=400 if form.is_bound and not form.is_valid() else 200)


def _failure(instance: ServiceInstance, failure_id: int) -> IngestFailure:
    failure = failure_get(instance=instance, failure_id=failure_id)
    if failure is None:
        raise NotFound("No such failure in this instance")
    return failure


def _readable(raw: str) -> str:
    """The payload indented for editing when it is JSON; as received when it is not."""
    try:
        readable = json.dumps(jsonlimit.loads(raw), indent=2, ensure_ascii=False)
        readable.encode("utf-8")  # a "\ud800" escape decodes to a lone surrogate, which the page cannot hold
    except ValueError:  # UnicodeEncodeError is one
        return raw
    return readable


def _detail(request: HttpRequest, page: Page, instance: ServiceInstance, failure: IngestFailure,
            **context: Any) -> HttpResponse:
    raw = context.pop("raw", None)
    return pv_render(request, page, instance, "acquisition", "visibility/acquisition_failure.html",
                     {"failure": failure, "raw": _readable(failure.raw) if raw is None else raw, **context})


@cockpit_page()
@require_GET
def failure_detail(request: HttpRequest, page: Page, instance_id: Any, failure_id: int) -> HttpResponse:
    instance = _instance(request, page, instance_id)
    return _detail(request, page, instance, _failure(instance, failure_id))


def _back(page: Page, instance: ServiceInstance, failure: IngestFailure) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("pv:failure", args=[page.subaccount.pk, instance.pk, failure.pk]))


@cockpit_page(post_writes=False)
@require_POST
def failure_resubmit_view(request: HttpRequest, page: Page, instance_id: Any, failure_id: int) -> HttpResponse:
    instance = _instance(request, page, instance_id)
    failure = _failure(instance, failure_id)
    raw = request.POST.get("raw", "")
    try:
        failure_resubmit(failure=failure, raw=raw)
    except MeshError as error:
        problems = (error.extra or {}).get("errors") or [{"field": "", "message": error.message}]
        return _detail(request, page, instance, failure, raw=raw, problems=problems)
    return _back(page, instance, failure)


@cockpit_page(post_writes=False)
@require_POST
def failure_discard_view(request: HttpRequest, page: Page, instance_id: Any, failure_id: int) -> HttpResponse:
    instance = _instance(request, page, instance_id)
    failure = _failure(instance, failure_id)
    try:
        failure_discard(failure=failure)
    except MeshError as error:
        return _detail(request, page, instance, failure, problems=[{"field": "", "message": error.message}])
    return _back(page, instance, failure)


urlpatterns = [
    path("", acquisition, name="acquisition"),
    path("failures/<int:failure_id>/", failure_detail, name="failure"),
    path("failures/<int:failure_id>/resubmit", failure_resubmit_view, name="failure-resubmit"),
    path("failures/<int:failure_id>/discard", failure_discard_view, name="failure-discard"),
]
