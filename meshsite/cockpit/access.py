"""`cockpit_page`: the one gate in front of every cockpit view, and the pages it answers with
when the gate or a service refuses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from meshsite.errors import MeshError
from meshsite.platform.models import Subaccount
from meshsite.platform.roles import require_role

View = Callable[..., HttpResponse]


@dataclass(frozen=True)
class Page:
    """What every cockpit template knows: whose subaccount, and whether it may be changed."""

    subaccount: Subaccount
    role: str

    @property
    def can_write(self) -> bool:
        return self.role == "administrator"


def cockpit_page(*, post_writes: bool = True) -> Callable[[View], View]:
    """Gate a view taking (request, page, ...) behind the user's role in `subaccount_id`.

    `post_writes=False` is for the few POSTs that change nothing (checking a descriptor)."""

    def decorate(view: View) -> View:
        @wraps(view)
        def gated(request: HttpRequest, subaccount_id: int, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            write = post_writes and request.method not in ("GET", "HEAD")
            try:
                role = require_role(user=request.user, subaccount_id=subaccount_id, write=write)
                page = Page(subaccount=Subaccount.objects.get(pk=subaccount_id), role=role)
                return view(request, page, *args, **kwargs)
            except MeshError as error:
                return refusal_page(request, error)

        return gated

    return decorate


def refusal_page(request: HttpRequest, error: MeshError) -> HttpResponse:
    return render(request, "cockpit/refused.html", {"error": error}, status=error.status_code)


SECTIONS = {"overview": "overview", "entitlements": "entitlements", "members": "members"}


def page_render(request: HttpRequest, page: Page, template: str, context: dict[str, Any],
                status: int = 200) -> HttpResponse:
    # The side navigation's highlighted entry, from the template's name (cockpit/instance*.html
    # and cockpit/key*.html are all under "Instances and Subscriptions").
    stem = template.rsplit("/", 1)[-1].split(".")[0].split("_")[0]
    section = SECTIONS.get(stem, "instances" if template.startswith("cockpit/") else "")
    return render(request, template, {"page": page, "section": section, **context}, status=status)
