"""The Open Connectors application's pages: thin views over messaging.connectors' selectors
and services. A service's refusal is shown beside the field it names, with a 400, and
nothing is stored (the services check everything before they write)."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from meshsite.cockpit.access import Page, cockpit_page, page_render
from meshsite.errors import Invalid, MeshError, NotFound
from meshsite.platform.models import Service, ServiceInstance

from ...connectors import selectors as log
from ...connectors.instances import (
    connector_configuration_set,
    connector_instance_create,
    connector_instance_delete,
    connector_instance_update,
    shown_configuration,
)
from ...connectors.queued import notifications_redeliver
from ...models import ConnectorInstance, Formula, VendorEventStatus
from . import selectors
from .forms import EXAMPLE, ConfigurationKeyForm, ConnectorForm, DeleteForm, event_meshes_of

PAGE_SIZE = 50
LISTED = 200

# Which form field a service's refusal concerns, by the words its message starts with.
FIELDS = (("name", "name"), ("A connector instance named", "name"), ("element", "element"),
          ("eventMesh", "event_mesh"), ("topicPrefix", "topic_prefix"), ("providerAccount", "provider_account"),
          ("event.", "configuration"), ("configuration", "configuration"))


def _refusal(form: Form, error: MeshError) -> None:
    message = str(error)
    field = next((name for word, name in FIELDS if message.startswith(word) and name in form.fields), None)
    form.add_error(field, message)


def _owner(page: Page, instance_id: Any) -> ServiceInstance:
    owner = ServiceInstance.objects.filter(pk=instance_id, subaccount=page.subaccount,
                                           service=Service.OPEN_CONNECTORS).first()
    if owner is None:
        raise NotFound("No such Open Connectors instance in this subaccount")
    return owner


def _connector(owner: ServiceInstance, pk: int) -> ConnectorInstance:
    found = ConnectorInstance.objects.filter(service_instance=owner, pk=pk).select_related(
        "service_instance", "event_mesh").first()
    if found is None:
        raise NotFound(f"No connector instance {pk} in {owner.name}")
    return found


def _render(request: HttpRequest, page: Page, template: str, context: dict[str, Any], *,
            status: int = 200) -> HttpResponse:
    return page_render(request, page, f"connectors/{template}", {"app": "oc", **context}, status=status)


def events_url(request: HttpRequest, connector: ConnectorInstance) -> str:
    """Where the provider posts its webhooks for this connector (the token names it)."""
    return request.build_absolute_uri(f"/elements/api-v2/events/{connector.element_key}/{connector.webhook_token}/")


def _connector_url(page: Page, connector: ConnectorInstance, name: str = "oc-connector") -> str:
    return reverse(f"mesh:{name}", args=[page.subaccount.pk, connector.service_instance_id, connector.pk])


@cockpit_page()
def app_home(request: HttpRequest, page: Page) -> HttpResponse:
    return _render(request, page, "home.html", {"owners": selectors.connector_services(subaccount=page.subaccount)})


def _instances_page(request: HttpRequest, page: Page, owner: ServiceInstance, form: ConnectorForm,
                    status: int = 200) -> HttpResponse:
    return _render(request, page, "instances.html", {
        "owner": owner, "tab": "connectors", "rows": selectors.connector_rows(owner=owner), "form": form,
    }, status=status)


@cockpit_page()
@require_http_methods(["GET", "POST"])
def instances(request: HttpRequest, page: Page, instance_id: str) -> HttpResponse:
    owner = _owner(page, instance_id)
    form = ConnectorForm(request.POST or None, event_meshes=event_meshes_of(owner),
                         initial={"configuration": json.dumps(EXAMPLE, indent=2)})
    if request.method == "GET":
        return _instances_page(request, page, owner, form)
    if form.is_valid():
        try:
            connector = connector_instance_create(service_instance=owner, **form.fields_for_service())
            return redirect(_connector_url(page, connector))
        except MeshError as error:
            _refusal(form, error)
    return _instances_page(request, page, owner, form, status=400)


def _edit_form(connector: ConnectorInstance, data: Any = None) -> ConnectorForm:
    return ConnectorForm(data, event_meshes=event_meshes_of(connector.service_instance), initial={
        "name": connector.name, "element": connector.element_key, "event_mesh": connector.event_mesh_id or "",
        "topic_prefix": connector.topic_prefix, "provider_account": connector.provider_account,
        "configuration": json.dumps(shown_configuration(connector), indent=2),
    })


def _connector_page(request: HttpRequest, page: Page, connector: ConnectorInstance, *,
                    form: ConnectorForm | None = None, key_form: ConfigurationKeyForm | None = None,
                    delete_form: DeleteForm | None = None, status: int = 200) -> HttpResponse:
    return _render(request, page, "connector.html", {
        "owner": connector.service_instance, "connector": connector, "tab": "settings",
        "events_url": events_url(request, connector),
        "configuration": json.dumps(shown_configuration(connector), indent=2),
        "form": form or _edit_form(connector), "key_form": key_form or ConfigurationKeyForm(),
        "delete_form": delete_form or DeleteForm(),
    }, status=status)


@cockpit_page()
@require_http_methods(["GET", "POST"])
def connector(request: HttpRequest, page: Page, instance_id: str, pk: int) -> HttpResponse:
    found = _connector(_owner(page, instance_id), pk)
    if request.method == "GET":
        return _connector_page(request, page, found)
    form = _edit_form(found, request.POST)
    if form.is_valid():
        try:
            connector_instance_update(instance=found, **form.fields_for_service())
            return redirect(_connector_url(page, found))
        except MeshError as error:
            _refusal(form, error)
    return _connector_page(request, page, _connector(found.service_instance, pk), form=form, status=400)


@cockpit_page()
@require_POST
def configuration_set(request: HttpRequest, page: Page, instance_id: str, pk: int) -> HttpResponse:
    found = _connector(_owner(page, instance_id), pk)
    form = ConfigurationKeyForm(request.POST)
    if form.is_valid():
        try:
            connector_configuration_set(instance=found, key=form.cleaned_data["key"], value=form.cleaned_data["value"])
            return redirect(_connector_url(page, found))
        except MeshError as error:
            form.add_error("value", str(error))
    return _connector_page(request, page, _connector(found.service_instance, pk), key_form=form, status=400)


@cockpit_page()
@require_POST
def connector_delete(request: HttpRequest, page: Page, instance_id: str, pk: int) -> HttpResponse:
    owner = _owner(page, instance_id)
    found = _connector(owner, pk)
    form = DeleteForm(request.POST)
    if not form.is_valid() or form.cleaned_data["confirm"] != found.name:
        form.add_error("confirm", f"Type {found.name} to delete it")
        return _connector_page(request, page, found, delete_form=form, status=400)
    connector_instance_delete(instance=found)
    return redirect("mesh:oc-instances", page.subaccount.pk, owner.pk)


def _before(request: HttpRequest) -> int | None:
    raw = request.GET.get("before", "")
    return int(raw) if raw.isdigit() else None


@cockpit_page()
def events(request: HttpRequest, page: Page, instance_id: str, pk: int) -> HttpResponse:
    found = _connector(_owner(page, instance_id), pk)
    rows = list(log.notifications_of(found, before=_before(request))[:PAGE_SIZE + 1])
    return _render(request, page, "events.html", {
        "owner": found.service_instance, "connector": found, "tab": "events",
        "entries": log.log_entries(found, rows[:PAGE_SIZE]),
        "next_before": rows[PAGE_SIZE - 1].pk if len(rows) > PAGE_SIZE else None,
    })


@cockpit_page()
def event(request: HttpRequest, page: Page, instance_id: str, pk: int, notification_id: str) -> HttpResponse:
    found = _connector(_owner(page, instance_id), pk)
    notification = log.notification_get(found, notification_id)
    if notification is None:
        raise NotFound(f"No notification {notification_id} of {found.name}")
    [entry] = log.log_entries(found, [notification])
    return _render(request, page, "event.html", {
        "owner": found.service_instance, "connector": found, "tab": "events", "entry": entry,
        "body": json.dumps(entry.body, indent=2),
    })


@cockpit_page()
def queued(request: HttpRequest, page: Page, instance_id: str, pk: int) -> HttpResponse:
    found = _connector(_owner(page, instance_id), pk)
    rows = list(log.notifications_queued(found)[:settings.MESH_CONNECTOR_MAX_LISTED])
    return _render(request, page, "queued.html", {
        "owner": found.service_instance, "connector": found, "tab": "queued",
        "entries": log.log_entries(found, rows), "redelivered": request.GET.get("redelivered"),
    })


@cockpit_page()
@require_POST
def redeliver(request: HttpRequest, page: Page, instance_id: str, pk: int) -> HttpResponse:
    found = _connector(_owner(page, instance_id), pk)
    ids = None if request.POST.get("all") else request.POST.getlist("notification")
    moved = notifications_redeliver(instance=found, notification_ids=ids)
    return redirect(_connector_url(page, found, "oc-queued") + f"?redelivered={moved}")


@cockpit_page()
def bodies(request: HttpRequest, page: Page, instance_id: str, pk: int) -> HttpResponse:
    found = _connector(_owner(page, instance_id), pk)
    status = request.GET.get("status") or None
    if status is not None and status not in VendorEventStatus.values:
        raise Invalid(f"status must be one of {', '.join(VendorEventStatus.values)}")
    rows = log.vendor_events_of(found, status=status)[:LISTED]
    return _render(request, page, "bodies.html", {
        "owner": found.service_instance, "connector": found, "tab": "bodies", "status": status or "",
        "statuses": VendorEventStatus.values, "rows": [(row, selectors.body_excerpt(row)) for row in rows],
    })


@cockpit_page()
def polls(request: HttpRequest, page: Page, instance_id: str, pk: int) -> HttpResponse:
    found = _connector(_owner(page, instance_id), pk)
    return _render(request, page, "polls.html", {
        "owner": found.service_instance, "connector": found, "tab": "polls",
        "runs": log.poll_runs_of(found)[:LISTED],
    })


@cockpit_page()
def formulas(request: HttpRequest, page: Page, instance_id: str) -> HttpResponse:
    owner = _owner(page, instance_id)
    return _render(request, page, "formulas.html", {
        "owner": owner, "tab": "formulas", "formulas": selectors.formulas_of(owner=owner),
    })


@cockpit_page()
def formula(request: HttpRequest, page: Page, instance_id: str, formula_id: int) -> HttpResponse:
    owner = _owner(page, instance_id)
    found = Formula.objects.filter(service_instance=owner, pk=formula_id).first()
    if found is None:
        raise NotFound(f"No formula {formula_id} in {owner.name}")
    return _render(request, page, "formula.html", {
        "owner": owner, "tab": "formulas", "formula": found, "steps": json.dumps(found.steps, indent=2),
        "instances": selectors.formula_instances(formula=found),
        "executions": selectors.executions_recent(formula=found),
    })
