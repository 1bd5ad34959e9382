"""The platform pages: the subaccount overview, entitlements, instances and subscriptions,
service keys and members. Each write is one service call; a refusal is shown beside the
field it concerns and nothing is stored."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from meshsite.errors import NotFound
from meshsite.platform import keys
from meshsite.platform.models import Entitlement, ServiceInstance, ServiceKey
from meshsite.platform.registry import KEY_PARAMETERS, PARAMETER_TEMPLATES, SUBSCRIPTION_APPS
from meshsite.platform.roles import subaccounts_of
from meshsite.platform.services import (
    NewServiceKey,
    PlatformError,
    entitlement_delete,
    entitlement_put,
    instance_create,
    instance_delete,
    instance_parameters_check,
    membership_delete,
    membership_put,
    service_key_create,
    service_key_delete,
    service_key_rotate,
)

from . import selectors
from .access import Page, cockpit_page, page_render
from .forms import EntitlementForm, InstanceForm, MemberForm, QuotaForm, ServiceKeyForm, json_error


@login_required
def home(request: HttpRequest) -> HttpResponse:
    subaccounts = list(subaccounts_of(user=request.user))
    if len(subaccounts) == 1:
        return redirect("cockpit:overview", subaccount_id=subaccounts[0].pk)
    return render(request, "cockpit/home.html", {"subaccounts": subaccounts})


def _instance(page: Page, instance_id: Any) -> ServiceInstance:
    instance = ServiceInstance.objects.filter(pk=instance_id, subaccount=page.subaccount).first()
    if instance is None:
        raise NotFound("No such service instance in this subaccount")
    return instance


def _app_url(instance: ServiceInstance) -> str | None:
    url_name = SUBSCRIPTION_APPS.get((instance.service, instance.plan))
    return reverse(url_name, args=[instance.subaccount_id]) if url_name else None


@cockpit_page()
def overview(request: HttpRequest, page: Page) -> HttpResponse:
    instances = selectors.instances_with_key_counts(subaccount=page.subaccount)
    return page_render(request, page, "cockpit/overview.html", {
        "entitlements": selectors.entitlements_used(subaccount=page.subaccount),
        "instances": [(instance, _app_url(instance)) for instance in instances],
        "key_count": sum(getattr(instance, "key_count", 0) for instance in instances),
    })


@cockpit_page()
@require_http_methods(["GET", "POST"])
def entitlements(request: HttpRequest, page: Page) -> HttpResponse:
    form = EntitlementForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            entitlement_put(subaccount=page.subaccount, **form.cleaned_data)
            return redirect("cockpit:entitlements", subaccount_id=page.subaccount.pk)
        except PlatformError as error:
            form.add_error(error.field, str(error))
    status = 400 if form.errors else 200
    return page_render(request, page, "cockpit/entitlements.html", {
        "form": form, "rows": selectors.entitlements_used(subaccount=page.subaccount),
    }, status=status)


def _entitlement(page: Page, entitlement_id: int) -> Entitlement:
    entitlement = page.subaccount.entitlements.filter(pk=entitlement_id).first()
    if entitlement is None:
        raise NotFound("No such entitlement in this subaccount")
    return entitlement


@cockpit_page()
@require_POST
def entitlement_change(request: HttpRequest, page: Page, entitlement_id: int) -> HttpResponse:
    entitlement = _entitlement(page, entitlement_id)
    form = QuotaForm(request.POST)
    problem = None
    if form.is_valid():
        try:
            entitlement_put(subaccount=page.subaccount, service=entitlement.service, plan=entitlement.plan,
                            quota=form.cleaned_data["quota"])
        except PlatformError as error:
            problem = str(error)
    else:
        problem = "; ".join(str(message) for message in form.errors["quota"])
    return _back_to_entitlements(request, page, problem, entitlement.pk)


@cockpit_page()
@require_POST
def entitlement_remove(request: HttpRequest, page: Page, entitlement_id: int) -> HttpResponse:
    entitlement = _entitlement(page, entitlement_id)
    try:
        entitlement_delete(entitlement=entitlement)
    except PlatformError as error:
        return _back_to_entitlements(request, page, str(error), entitlement.pk)
    return redirect("cockpit:entitlements", subaccount_id=page.subaccount.pk)


def _back_to_entitlements(request: HttpRequest, page: Page, problem: str | None, row: int) -> HttpResponse:
    if problem is None:
        return redirect("cockpit:entitlements", subaccount_id=page.subaccount.pk)
    return page_render(request, page, "cockpit/entitlements.html", {
        "form": EntitlementForm(), "rows": selectors.entitlements_used(subaccount=page.subaccount),
        "row_error": (row, problem),
    }, status=400)


@cockpit_page()
def instances(request: HttpRequest, page: Page) -> HttpResponse:
    rows = selectors.instances_with_key_counts(subaccount=page.subaccount)
    return page_render(request, page, "cockpit/instances.html", {
        "rows": [(instance, _app_url(instance)) for instance in rows],
    })


def _plans(page: Page) -> list[tuple[str, str]]:
    rows = selectors.entitlements_used(subaccount=page.subaccount)
    return [(f"{row.entitlement.service}:{row.entitlement.plan}", _plan_label(row)) for row in rows]


def _plan_label(row: selectors.EntitlementUse) -> str:
    entitlement = row.entitlement
    return f"{entitlement.get_service_display()} — {entitlement.plan} ({row.free} of {entitlement.quota} free)"


@cockpit_page()
@require_http_methods(["GET", "POST"])
def instance_new(request: HttpRequest, page: Page) -> HttpResponse:
    form = InstanceForm(request.POST or None, plans=_plans(page), initial={"plan": request.GET.get("plan")})
    if request.method == "POST" and form.is_valid():
        service, plan = form.cleaned_data["plan"]
        name, parameters = form.cleaned_data["name"], form.cleaned_data["parameters"]
        try:
            instance = instance_create(subaccount=page.subaccount, service=service, plan=plan,
                                       name=name, parameters=parameters)
            return redirect("cockpit:instance", subaccount_id=page.subaccount.pk, instance_id=instance.pk)
        except PlatformError as error:
            form.add_error(error.field, str(error))
    templates = {f"{service}:{plan}": make("NAME") for (service, plan), make in PARAMETER_TEMPLATES.items()}
    return page_render(request, page, "cockpit/instance_new.html", {
        "form": form, "templates": templates,
    }, status=400 if form.errors else 200)


@cockpit_page(post_writes=False)
@require_POST
def parameters_check(request: HttpRequest, page: Page) -> JsonResponse:
    """As the user types: would these parameters be accepted? Stores nothing."""
    service, _, plan = request.POST.get("plan", "").partition(":")
    try:
        parameters = json.loads(request.POST.get("parameters") or "null")
    except json.JSONDecodeError as error:
        return JsonResponse({"ok": False, "error": json_error(error)})
    try:
        normalized = instance_parameters_check(service=service, plan=plan, name=request.POST.get("name", ""),
                                               parameters=parameters)
    except PlatformError as error:
        return JsonResponse({"ok": False, "error": str(error), "field": error.field})
    return JsonResponse({"ok": True, "normalized": normalized})


@cockpit_page()
def instance_detail(request: HttpRequest, page: Page, instance_id: str) -> HttpResponse:
    instance = _instance(page, instance_id)
    return _instance_page(request, page, instance, _key_form(instance))


def _key_form(instance: ServiceInstance, data: Any = None) -> ServiceKeyForm:
    return ServiceKeyForm(data, takes_parameters=instance.service in KEY_PARAMETERS)


def _instance_page(request: HttpRequest, page: Page, instance: ServiceInstance, key_form: ServiceKeyForm,
                   status: int = 200) -> HttpResponse:
    return page_render(request, page, "cockpit/instance.html", {
        "instance": instance, "keys": instance.keys.select_related("application").order_by("name"),
        "key_form": key_form, "app_url": _app_url(instance), "parameters": json.dumps(instance.parameters, indent=2),
    }, status=status)


@cockpit_page()
@require_http_methods(["GET", "POST"])
def instance_remove(request: HttpRequest, page: Page, instance_id: str) -> HttpResponse:
    instance = _instance(page, instance_id)
    problem = None
    if request.method == "POST":
        if request.POST.get("confirm") != instance.name:
            problem = "Type the instance name to confirm"
        else:
            try:
                instance_delete(instance=instance)
                return redirect("cockpit:instances", subaccount_id=page.subaccount.pk)
            except PlatformError as error:
                problem = str(error)
    return page_render(request, page, "cockpit/instance_delete.html", {
        "instance": instance, "problem": problem,
    }, status=400 if problem else 200)


def _key(instance: ServiceInstance, key_id: int) -> ServiceKey:
    key = instance.keys.select_related("application", "instance").filter(pk=key_id).first()
    if key is None:
        raise NotFound("No such service key for this instance")
    return key


def _key_shown_once(request: HttpRequest, page: Page, new: NewServiceKey, rotated: bool) -> HttpResponse:
    response = page_render(request, page, "cockpit/key_created.html", {
        "instance": new.key.instance, "key": new.key, "rotated": rotated,
        "credentials": json.dumps(keys.credentials(new.key, secret=new.client_secret), indent=2),
        "vcap": json.dumps(keys.vcap_services(new.key, secret=new.client_secret), indent=2),
    }, status=201 if not rotated else 200)
    response["Cache-Control"] = "no-store"  # the one page that holds the secret
    return response


@cockpit_page()
@require_POST
def key_new(request: HttpRequest, page: Page, instance_id: str) -> HttpResponse:
    instance = _instance(page, instance_id)
    form = _key_form(instance, request.POST)
    if form.is_valid():
        try:
            new = service_key_create(instance=instance, name=form.cleaned_data["name"],
                                     parameters=form.cleaned_data.get("parameters"))
            return _key_shown_once(request, page, new, rotated=False)
        except PlatformError as error:
            form.add_error(error.field, str(error))
    return _instance_page(request, page, instance, form, status=400)


@cockpit_page()
def key_detail(request: HttpRequest, page: Page, instance_id: str, key_id: int) -> HttpResponse:
    key = _key(_instance(page, instance_id), key_id)
    return page_render(request, page, "cockpit/key.html", {
        "instance": key.instance, "key": key,
        "credentials": json.dumps(keys.credentials(key), indent=2),
    })


@cockpit_page()
@require_POST
def key_rotate(request: HttpRequest, page: Page, instance_id: str, key_id: int) -> HttpResponse:
    key = _key(_instance(page, instance_id), key_id)
    return _key_shown_once(request, page, service_key_rotate(key=key), rotated=True)


@cockpit_page()
@require_POST
def key_remove(request: HttpRequest, page: Page, instance_id: str, key_id: int) -> HttpResponse:
    key = _key(_instance(page, instance_id), key_id)
    service_key_delete(key=key)
    return redirect("cockpit:instance", subaccount_id=page.subaccount.pk, instance_id=key.instance_id)


@cockpit_page()
@require_http_methods(["GET", "POST"])
def members(request: HttpRequest, page: Page) -> HttpResponse:
    form = MemberForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = get_user_model().objects.filter(username=form.cleaned_data["username"]).first()
        if user is None:
            form.add_error("username", "No user with this name")
        else:
            membership_put(subaccount=page.subaccount, user_id=user.pk, role=form.cleaned_data["role"])
            return redirect("cockpit:members", subaccount_id=page.subaccount.pk)
    return page_render(request, page, "cockpit/members.html", {
        "form": form, "rows": selectors.members_of(subaccount=page.subaccount),
    }, status=400 if form.errors else 200)


@cockpit_page()
@require_POST
def member_remove(request: HttpRequest, page: Page, membership_id: int) -> HttpResponse:
    membership = page.subaccount.memberships.filter(pk=membership_id).first()
    if membership is None:
        raise NotFound("No such member")
    membership_delete(membership=membership)
    return HttpResponseRedirect(reverse("cockpit:members", args=[page.subaccount.pk]))
