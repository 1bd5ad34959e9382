"""What every Process Visibility page needs: its instance, checked against the subaccount and
the user's Process Visibility role, and one renderer that fills the app's tabs."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse

from meshsite.cockpit.access import Page, page_render
from meshsite.errors import Forbidden, NotFound
from meshsite.platform.models import Service, ServiceInstance

from ..models import Scenario
from ..roles import user_roles


def pv_instance(request: HttpRequest, page: Page, instance_id: Any, *, role: str) -> ServiceInstance:
    """The subaccount's Process Visibility instance, if the user holds `role` in it."""
    instance = ServiceInstance.objects.filter(pk=instance_id, subaccount=page.subaccount,
                                              service=Service.PROCESS_VISIBILITY).first()
    if instance is None:
        raise NotFound("No such Process Visibility instance in this subaccount")
    if role not in user_roles(user=request.user, instance=instance):
        raise Forbidden(f"This page needs the {role} role in {instance.name}; ask an administrator to grant it")
    return instance


def pv_scenario(instance: ServiceInstance, scenario_id: str) -> Scenario:
    scenario = Scenario.objects.filter(instance=instance, scenario_id=scenario_id).first()
    if scenario is None:
        raise NotFound("No such scenario in this instance")
    return scenario


def pv_render(request: HttpRequest, page: Page, instance: ServiceInstance | None, tab: str, template: str,
              context: dict[str, Any], status: int = 200) -> HttpResponse:
    roles = user_roles(user=request.user, instance=instance) if instance else set()
    # "app" marks the side navigation's Process Visibility entry (and not Event Mesh's) current.
    return page_render(request, page, template,
                       {"app": "pv", "pv": instance, "tab": tab, "pv_roles": roles, **context}, status=status)
