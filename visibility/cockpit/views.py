"""The Process Visibility application's home: the subaccount's instances."""

from __future__ import annotations

from django.db.models import Count
from django.http import HttpRequest, HttpResponse

from meshsite.cockpit.access import Page, cockpit_page
from meshsite.platform.models import Service

from .common import pv_render


@cockpit_page()
def app_home(request: HttpRequest, page: Page) -> HttpResponse:
    instances = (page.subaccount.instances.filter(service=Service.PROCESS_VISIBILITY)
                 .annotate(scenario_count=Count("pv_scenarios")).order_by("name"))
    return pv_render(request, page, None, "home", "visibility/home.html", {"instances": instances})
