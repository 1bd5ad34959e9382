"""`/elements/api-v2/events/<elementKey>/[<token>/]`: where providers post their webhooks.

A plain Django view on the lean API stack: a provider wants its 2xx fast, and all this does
is store the body (messaging.connectors.intake). No bearer token -- providers have none; an
instance's own URL carries its unguessable webhook token instead, and an instance with a
vendor secret also wants its provider's signature (401 without it). Errors in meshsite's
format; never a 500 for what a provider sends.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from meshsite.errors import STORE_UNAVAILABLE, MeshError, TooLarge, Unavailable
from meshsite.middleware import raw_request_path

from ..connectors.intake import vendor_event_receive

ALLOW = "GET, POST"
MAX_CHALLENGE = 512


class MethodNotAllowed(MeshError):
    status_code = 405
    code = "method_not_allowed"


def _error(error: MeshError, headers: dict[str, str] | None = None) -> JsonResponse:
    response = JsonResponse({"detail": error.message, "code": error.code, "extra": error.extra},
                            status=error.status_code)
    for name, value in {**error.headers, **(headers or {})}.items():
        response[name] = value
    return response


def _challenge(request: HttpRequest) -> HttpResponse:
    # Dropbox verifies a webhook URL with GET ?challenge=<x> and wants <x> echoed back.
    challenge = request.GET.get("challenge", "")[:MAX_CHALLENGE]
    response = HttpResponse(challenge, content_type="text/plain")
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _post(request: HttpRequest, element_key: str, token: str | None) -> HttpResponse:
    try:
        body = request.body
    except RequestDataTooBig:
        raise TooLarge("Request body too large") from None
    if len(body) > settings.MESH_CONNECTOR_MAX_BODY:
        raise TooLarge(f"A provider's body is at most {settings.MESH_CONNECTOR_MAX_BODY} bytes")
    row = vendor_event_receive(element_key=element_key, token=token, body=body,
                               content_type=request.headers.get("Content-Type", ""), headers=request.headers,
                               uri=_uri(request))
    return JsonResponse({"id": row.pk, "status": row.status}, status=200)


def _uri(request: HttpRequest) -> str:
    """The URL the provider called, as HubSpot signs it: scheme and host as the proxy passed
    them on (SECURE_PROXY_SSL_HEADER, USE_X_FORWARDED_HOST), the path as sent."""
    try:
        host = request.get_host()
    except DisallowedHost:  # the lean stack has no CommonMiddleware; no host, no match
        host = ""
    query = request.META.get("QUERY_STRING", "")
    return f"{request.scheme}://{host}{raw_request_path(request)}" + (f"?{query}" if query else "")


@csrf_exempt
def vendor_events(request: HttpRequest, element_key: str, token: str | None = None) -> HttpResponse:
    try:
        if request.method == "GET":
            return _challenge(request)
        if request.method != "POST":
            raise MethodNotAllowed(f"Method {request.method} not allowed", headers={"Allow": ALLOW})
        return _post(request, element_key, token)
    except MeshError as error:
        return _error(error)
    except (OperationalError, InterfaceError):
        # The store is down: nothing was written, and the provider retries on a 503.
        return _error(Unavailable(STORE_UNAVAILABLE), {"Retry-After": "5"})
