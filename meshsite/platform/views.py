"""The token endpoint, at exactly /oauth/token as SAP clients derive it from the key.

Both forms of the contract are served: the standard POST form, and the GET form that CAP
uses (`?grant_type=client_credentials&response_type=token` with HTTP Basic). oauthlib
only accepts POST with the parameters in the body, so the GET form is handed to it as
such.

Failed client authentications are limited per address and per client id (ratelimit.py);
the address is REMOTE_ADDR, which is the proxy's behind a proxy unless the server is told to
take it from X-Forwarded-For (docs/configuration.md, "Token endpoint").
"""

from __future__ import annotations

import base64
import json
from urllib.parse import unquote_plus, urlencode

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, QueryDict
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.oauth2_backends import get_oauthlib_core

from . import ratelimit

TOKEN_PARAMETERS = ("grant_type", "client_id", "client_secret", "scope")


@method_decorator(csrf_exempt, name="dispatch")
class TokenView(View):
    http_method_names = ["get", "post"]

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._token(request, request.GET)

    def post(self, request: HttpRequest) -> HttpResponse:
        return self._token(request, request.POST)

    def _token(self, request: HttpRequest, params: QueryDict) -> HttpResponse:
        refusal = grant_refusal(params)
        if refusal is not None:
            return refusal
        address = request_address(request)
        limited = ratelimit.address_refusal(address)
        if limited is not None:
            return too_many(limited)
        response = self._authenticate(request, params)
        if response.status_code == 401:
            limited = ratelimit.failure_record(client_id=_client_id(request, params), address=address)
            if limited is not None:
                return too_many(limited)
        return response

    def _authenticate(self, request: HttpRequest, params: QueryDict) -> HttpResponse:
        if has_control_characters(request, params):
            return invalid_client()
        core = get_oauthlib_core()
        headers = core.extract_headers(request)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = urlencode([(key, params[key]) for key in TOKEN_PARAMETERS if key in params])
        uri = request.build_absolute_uri(request.path)
        try:
            response_headers, content, status = core.server.create_token_response(uri, "POST", body, headers)
        except (OperationalError, InterfaceError):
            return store_unavailable()
        response = HttpResponse(content=content, status=status, content_type="application/json")
        for name, value in response_headers.items():
            response[name] = value
        if status == 200:
            response.content = json.dumps(sap_token_body(json.loads(content))).encode()
        elif status == 401:
            # RFC 6749 5.2: challenge with the scheme the client authenticates with.
            response["WWW-Authenticate"] = 'Basic realm="meshsite"'
        return response


def grant_refusal(params: QueryDict) -> HttpResponse | None:
    """RFC 6749 5.2 for a grant that is not served, answered before oauthlib: its server
    knows every grant, and would ask a password grant for its username as if it were served."""
    grants = params.getlist("grant_type")
    if not grants or grants == [""]:
        return _oauth_error("invalid_request", "grant_type is missing; use grant_type=client_credentials")
    if len(grants) > 1:
        return _oauth_error("invalid_request", "grant_type is given more than once")
    if grants[0] != "client_credentials":
        return _oauth_error("unsupported_grant_type", "Only grant_type=client_credentials is supported")
    return None


def _oauth_error(error: str, description: str, status: int = 400) -> HttpResponse:
    body = json.dumps({"error": error, "error_description": description})
    response = HttpResponse(body, status=status, content_type="application/json")
    response["Cache-Control"] = "no-store"  # RFC 6749 5.1, which oauthlib's own errors follow
    response["Pragma"] = "no-cache"
    return response


def too_many(refusal: ratelimit.Refusal) -> HttpResponse:
    response = _oauth_error(refusal.error, refusal.description, status=429)
    response["Retry-After"] = str(refusal.retry_after)
    return response


def request_address(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR") or ""


def _client_id(request: HttpRequest, params: QueryDict) -> str:
    """The client id a request authenticates as, read as django-oauth-toolkit reads it."""
    auth = request.headers.get("Authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            return unquote_plus(base64.b64decode(auth[6:]).decode("utf-8").split(":", 1)[0])
        except (ValueError, UnicodeDecodeError):
            return ""
    return params.get("client_id", "")


def has_control_characters(request: HttpRequest, params: QueryDict) -> bool:
    """Credentials no client can hold (PostgreSQL text even refuses NUL): refuse them here."""
    values = [value for key in TOKEN_PARAMETERS for value in params.getlist(key)]
    auth = request.headers.get("Authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            values.append(base64.b64decode(auth[6:], validate=True).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return False  # oauthlib refuses a malformed header itself
    return any(not value.isprintable() for value in values)


def client_refused() -> HttpResponse:
    """django-oauth-toolkit's answer to a client it could not authenticate."""
    response = HttpResponse(json.dumps({"error": "invalid_client"}), status=401, content_type="application/json")
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    response["WWW-Authenticate"] = 'Basic realm="meshsite"'
    return response


def invalid_client() -> HttpResponse:
    response = HttpResponse(
        json.dumps({"error": "invalid_client"}), status=401, content_type="application/json"
    )
    response["WWW-Authenticate"] = 'Basic realm="meshsite"'
    return response


def store_unavailable() -> HttpResponse:
    response = HttpResponse(
        json.dumps({"error": "temporarily_unavailable"}), status=503, content_type="application/json"
    )
    response["Retry-After"] = "5"
    return response


def sap_token_body(body: dict) -> dict:
    body["token_type"] = "bearer"
    body.pop("refresh_token", None)
    return body
