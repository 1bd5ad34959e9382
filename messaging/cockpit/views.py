"""The Event Mesh application's pages. Reads through selectors, writes through the services
the management and messaging APIs call; a refusal is shown beside its field."""

from __future__ import annotations

import json
from typing import Any

from django.forms import Form
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from meshsite.cockpit.access import Page, cockpit_page, page_render
from meshsite.errors import MeshError, NotFound
from meshsite.platform.models import Service, ServiceInstance

from .. import selectors as mesh
from ..asyncapi import asyncapi_document, attachment
from ..metrics.selectors import queue_rates
from ..names import InvalidName, covers, validate_topic
from ..services import (
    dead_letters_requeue,
    queue_delete,
    queue_purge,
    queue_put,
    subscription_delete,
    subscription_put,
)
from ..services.queues import topic_subscribe_accepted
from ..services.webhooks import webhook_create, webhook_delete, webhook_handshake_request, webhook_set_state
from . import selectors
from .forms import QueueForm, SubscriptionForm, WebhookForm, queue_initial

# Which form field a service's refusal concerns, by the name the API gives it in its message.
FIELDS = (("pushConfig.endpoint", "endpoint"), ("securitySchema", "auth"), ("deadMsgQueue", "dead_msg_queue"),
          ("defaultContentType", "default_content_type"), ("pattern", "pattern"), ("topic", "pattern"))


def _refusal(form: Form, error: MeshError, default: str | None) -> None:
    message = str(error)
    field = next((name for word, name in FIELDS if word in message and name in form.fields), default)
    form.add_error(field if field in form.fields else None, message)


def _require_subscription(page: Page) -> None:
    if not selectors.is_subscribed(subaccount=page.subaccount):
        raise NotFound("This subaccount is not subscribed to the Event Mesh application: create its "
                       "event-mesh/standard subscription under Instances and Subscriptions first")


def _client(page: Page, instance_id: Any) -> ServiceInstance:
    _require_subscription(page)
    instance = ServiceInstance.objects.filter(pk=instance_id, subaccount=page.subaccount,
                                              service=Service.EVENT_MESH, plan="default").first()
    if instance is None:
        raise NotFound("No such Event Mesh message client in this subaccount")
    return instance


def _render(request: HttpRequest, page: Page, instance: ServiceInstance | None, tab: str, template: str,
            context: dict[str, Any], status: int = 200) -> HttpResponse:
    return page_render(request, page, template, {"client": instance, "tab": tab, **context}, status=status)


@cockpit_page()
def app_home(request: HttpRequest, page: Page) -> HttpResponse:
    _require_subscription(page)
    return _render(request, page, None, "clients", "mesh/clients.html", {
        "clients": selectors.message_clients(subaccount=page.subaccount),
    })


def _queues_page(request: HttpRequest, page: Page, instance: ServiceInstance, form: QueueForm,
                 status: int = 200) -> HttpResponse:
    return _render(request, page, instance, "queues", "mesh/queues.html", {
        "rows": selectors.queue_rows(instance=instance), "form": form,
        "connections": selectors.connections_by_protocol(instance=instance),
    }, status=status)


@cockpit_page()
@require_http_methods(["GET", "POST"])
def queues(request: HttpRequest, page: Page, instance_id: str) -> HttpResponse:
    instance = _client(page, instance_id)
    form = QueueForm(request.POST or None, initial={"name": f"{instance.namespace}/", "access_type": "NON_EXCLUSIVE"})
    if request.method == "POST":
        if form.is_valid():
            try:
                queue, _ = queue_put(instance=instance, name=form.cleaned_data["name"], attributes=form.attributes())
                return redirect(_queue_url(page, instance, queue.name))
            except MeshError as error:
                _refusal(form, error, "name")
        return _queues_page(request, page, instance, form, status=400)
    return _queues_page(request, page, instance, form)


def _queue_url(page: Page, instance: ServiceInstance, name: str) -> str:
    return reverse("mesh:queue", args=[page.subaccount.pk, instance.pk, name])


def _queue_page(request: HttpRequest, page: Page, instance: ServiceInstance, name: str, *,
                form: QueueForm | None = None, sub_form: SubscriptionForm | None = None, problem: str = "",
                status: int = 200) -> HttpResponse:
    queue = mesh.queue_get(instance=instance, name=name)
    [row] = selectors.queue_rows(instance=instance, name=queue.name)
    return _render(request, page, instance, "queues", "mesh/queue.html", {
        "row": row, "queue": queue, "subscriptions": mesh.subscriptions_of(queue=queue),
        "form": form or QueueForm(initial=queue_initial(queue), fixed_name=True),
        "sub_form": sub_form or SubscriptionForm(), "problem": problem,
        "topics": selectors.topics_seen(instance=instance, limit=50),
    }, status=status)


@cockpit_page()
@require_http_methods(["GET", "POST"])
def queue(request: HttpRequest, page: Page, instance_id: str, name: str) -> HttpResponse:
    instance = _client(page, instance_id)
    if request.method == "GET":
        return _queue_page(request, page, instance, name)
    queue = mesh.queue_get(instance=instance, name=name)
    form = QueueForm(request.POST, initial={"name": queue.name}, fixed_name=True)
    if form.is_valid():
        try:
            queue_put(instance=instance, name=queue.name, attributes=form.attributes())
            return redirect(_queue_url(page, instance, queue.name))
        except MeshError as error:
            _refusal(form, error, None)
    return _queue_page(request, page, instance, name, form=form, status=400)


@cockpit_page()
@require_POST
def queue_action(request: HttpRequest, page: Page, instance_id: str, action: str, name: str) -> HttpResponse:
    instance = _client(page, instance_id)
    queue = mesh.queue_get(instance=instance, name=name)
    if action == "purge":
        queue_purge(instance=instance, name=queue.name)
    elif action == "delete":
        if request.POST.get("confirm") != queue.name:
            return _queue_page(request, page, instance, name, problem="Type the queue name to confirm", status=400)
        queue_delete(instance=instance, name=queue.name)
        return redirect("mesh:queues", page.subaccount.pk, instance.pk)
    elif action in ("subscribe", "unsubscribe"):
        return _subscription_change(request, page, instance, queue.name, action)
    else:
        raise NotFound("No such queue action")
    return redirect(_queue_url(page, instance, queue.name))


def _subscription_change(request: HttpRequest, page: Page, instance: ServiceInstance, name: str,
                         action: str) -> HttpResponse:
    form = SubscriptionForm(request.POST)
    if form.is_valid():
        pattern = form.cleaned_data["pattern"]
        try:
            if action == "subscribe":
                subscription_put(instance=instance, queue_name=name, pattern=pattern)
            else:
                subscription_delete(instance=instance, queue_name=name, pattern=pattern)
            return redirect(_queue_url(page, instance, name))
        except MeshError as error:
            _refusal(form, error, "pattern")
    return _queue_page(request, page, instance, name, sub_form=form, status=400)


@cockpit_page()
def topic_match(request: HttpRequest, page: Page, instance_id: str) -> JsonResponse:
    """For the subscription editor, as the user types: is the pattern allowed, and which
    topics (seen on this instance's queues, plus the one typed) does it match?"""
    instance = _client(page, instance_id)
    pattern, topic = request.GET.get("pattern", ""), request.GET.get("topic", "").strip()
    try:
        topic_subscribe_accepted(instance=instance, pattern=pattern)
    except MeshError as error:
        return JsonResponse({"ok": False, "error": str(error)})
    candidates = selectors.topics_seen(instance=instance)
    answer: dict[str, Any] = {"ok": True, "matches": [seen for seen in candidates if covers(pattern, seen)]}
    if topic:
        try:
            validate_topic(topic)
            answer["topic"] = {"name": topic, "matches": covers(pattern, topic)}
        except InvalidName as error:
            answer["topic"] = {"name": topic, "error": str(error)}
    return JsonResponse(answer)


def _webhooks_page(request: HttpRequest, page: Page, instance: ServiceInstance, form: WebhookForm,
                   status: int = 200) -> HttpResponse:
    return _render(request, page, instance, "webhooks", "mesh/webhooks.html", {
        "rows": selectors.webhooks_of(instance=instance), "form": form,
    }, status=status)


def _queue_names(instance: ServiceInstance) -> list[str]:
    return [queue.name for queue in mesh.queues_list(instance=instance)]


@cockpit_page()
@require_http_methods(["GET", "POST"])
def webhooks(request: HttpRequest, page: Page, instance_id: str) -> HttpResponse:
    instance = _client(page, instance_id)
    form = WebhookForm(request.POST or None, queues=_queue_names(instance))
    if request.method == "POST":
        if form.is_valid():
            try:
                webhook = webhook_create(instance=instance, spec=form.spec())
                return redirect("mesh:webhook", page.subaccount.pk, instance.pk, webhook.name)
            except MeshError as error:
                _refusal(form, error, "name")
        return _webhooks_page(request, page, instance, form, status=400)
    return _webhooks_page(request, page, instance, form)


@cockpit_page()
def webhook(request: HttpRequest, page: Page, instance_id: str, name: str) -> HttpResponse:
    instance = _client(page, instance_id)
    subscription = mesh.webhook_get(instance=instance, name=name)
    return _render(request, page, instance, "webhooks", "mesh/webhook.html", {
        "webhook": subscription, "attempts": mesh.webhook_attempts(subscription=subscription, limit=100),
    })


@cockpit_page()
@require_POST
def webhook_action(request: HttpRequest, page: Page, instance_id: str, action: str, name: str) -> HttpResponse:
    instance = _client(page, instance_id)
    subscription = mesh.webhook_get(instance=instance, name=name)
    if action in ("pause", "resume"):
        webhook_set_state(instance=instance, name=subscription.name, action=action)
    elif action == "handshake":
        webhook_handshake_request(instance=instance, name=subscription.name)
    elif action == "delete":
        webhook_delete(instance=instance, name=subscription.name)
        return redirect("mesh:webhooks", page.subaccount.pk, instance.pk)
    else:
        raise NotFound("No such webhook action")
    return redirect("mesh:webhook", page.subaccount.pk, instance.pk, subscription.name)


@cockpit_page()
def test(request: HttpRequest, page: Page, instance_id: str) -> HttpResponse:
    instance = _client(page, instance_id)
    return _render(request, page, instance, "test", "mesh/test.html", {
        "queues": _queue_names(instance),
        "config": {"instance": str(instance.pk), "namespace": instance.namespace,
                   "ticketUrl": reverse("ws-tickets"), "canWrite": page.can_write},
    })


@cockpit_page()
def monitor(request: HttpRequest, page: Page, instance_id: str) -> HttpResponse:
    instance = _client(page, instance_id)
    return _render(request, page, instance, "monitor", "mesh/monitor.html", {
        "rows": selectors.queue_rows(instance=instance),
        "failures": selectors.failed_deliveries(instance=instance),
        "dead_queues": selectors.dead_message_queues(instance=instance),
        "connections": selectors.connections_by_protocol(instance=instance),
        "rates_url": reverse("mesh:rates", args=[page.subaccount.pk, instance.pk]),
    })


@cockpit_page()
def rates(request: HttpRequest, page: Page, instance_id: str) -> JsonResponse:
    """The Monitor chart's data: per-minute counts of the last hour, per queue, from the
    meter's minutes in the database (so every server process's work is in it)."""
    instance = _client(page, instance_id)
    series = queue_rates(instance=instance, minutes=60)
    minutes = series[0].minutes if series else []
    return JsonResponse({
        "minutes": [minute.isoformat() for minute in minutes],
        "queues": [{"queue": one.queue, **{kind: getattr(one, kind) for kind in RATE_KINDS}} for one in series],
    })


RATE_KINDS = ("published", "consumed", "acknowledged", "delivered", "delivery_failed", "dead_lettered")


@cockpit_page()
def dead_letters(request: HttpRequest, page: Page, instance_id: str, name: str) -> HttpResponse:
    instance = _client(page, instance_id)
    queue = mesh.queue_get(instance=instance, name=name)
    return _render(request, page, instance, "monitor", "mesh/dead_letters.html", {
        "queue": queue, "messages": mesh.messages_browse(queue=queue, limit=200),
        "moved": request.GET.get("moved"),
    })


@cockpit_page()
@require_POST
def dead_letters_requeue_view(request: HttpRequest, page: Page, instance_id: str, name: str) -> HttpResponse:
    instance = _client(page, instance_id)
    queue = mesh.queue_get(instance=instance, name=name)
    ids = None if request.POST.get("all") else request.POST.getlist("message")
    moved = dead_letters_requeue(instance=instance, queue_name=queue.name, message_ids=ids)
    return redirect(reverse("mesh:dead-letters", args=[page.subaccount.pk, instance.pk, queue.name])
                    + f"?moved={moved}")


@cockpit_page()
def message(request: HttpRequest, page: Page, instance_id: str, message_id: str) -> HttpResponse:
    """Peek: a message's headers and body, without consuming it."""
    instance = _client(page, instance_id)
    found = selectors.message_peek(instance=instance, message_uuid=message_id)
    if found is None:
        raise NotFound("No such message (consumed, acknowledged or re-queued since?)")
    payload = bytes(found.payload)
    try:
        body, binary = payload.decode("utf-8"), False
    except UnicodeDecodeError:
        body, binary = payload.hex(" "), True
    return _render(request, page, instance, "monitor", "mesh/message.html", {
        "message": found, "body": body, "binary": binary,
    })


@cockpit_page()
def asyncapi(request: HttpRequest, page: Page, instance_id: str) -> HttpResponse:
    """The message client's live topology as an AsyncAPI 3 document, to download (the same
    document the API serves at /api/v1/asyncapi to the instance's own keys)."""
    instance = _client(page, instance_id)
    response = HttpResponse(json.dumps(asyncapi_document(instance=instance), indent=2),
                            content_type="application/json")
    response["Content-Disposition"] = attachment(instance.name)
    return response
