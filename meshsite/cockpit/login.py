"""The cockpit's login, with failed attempts limited as the token endpoint limits failed
client authentications (meshsite.platform.ratelimit): per source address (refused before
any password is checked) and per user name (a wrong password past the limit is refused, the
right one still logs in, so nobody can lock a user out by guessing)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse

from meshsite.platform import ratelimit
from meshsite.platform.views import request_address


class LoginView(auth_views.LoginView):
    template_name = "cockpit/login.html"
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        refusal = ratelimit.address_refusal(request_address(request))
        if refusal is not None:
            return self._too_many(refusal)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: Any) -> HttpResponse:
        username = str(self.request.POST.get("username", ""))[:150]
        refusal = ratelimit.failure_record(client_id=f"cockpit-login:{username}",
                                           address=request_address(self.request))
        if refusal is not None:
            return self._too_many(refusal)
        return super().form_invalid(form)

    def _too_many(self, refusal: ratelimit.Refusal) -> HttpResponse:
        refused = f"Too many failed logins; try again in {refusal.retry_after} s"
        context = self.get_context_data(form=self.get_form_class()(self.request), refused=refused)
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(refusal.retry_after)
        return response
