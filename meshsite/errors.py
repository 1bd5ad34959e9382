"""The one place that shapes API errors.

meshsite-native endpoints answer `{"detail", "code", "extra"}`; the SAP-compatible endpoints
(views with `error_shape = "sap"`) answer SAP's own `{"message": ...}`, which clients parse,
and SAP's webhook subscriptions API (`error_shape = "sap-webhooks"`) answers a name that
exists as SAP's does there: 409 `{"error": {"code": "CONFLICT", "message": ...}}`.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from meshsite.middleware import RAW_PATH_PREFIXES


class MeshError(Exception):
    """A refused operation, raised by services; the API layer answers it with its status.

    Services raise these whatever their caller (REST, WebSocket, Celery, CLI), so the
    status travels with the error instead of being re-decided by each caller.
    """

    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, extra: Any = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.extra = extra


class Invalid(MeshError):
    pass


class Forbidden(MeshError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "forbidden"


class NotFound(MeshError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(MeshError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class Gone(MeshError):
    status_code = status.HTTP_410_GONE
    code = "gone"


class TooLarge(MeshError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "too_large"


class LimitReached(MeshError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "limit_reached"


class Unauthorized(MeshError):
    status_code = status.HTTP_401_UNAUTHORIZED
    code = "unauthorized"


STORE_UNAVAILABLE = "The message store is unavailable; retry shortly"


class Unavailable(MeshError):
    """The store is down or restarting: retryable, nothing was written."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "unavailable"


class InternalError(MeshError):
    """A bug of ours, said without its details (they go to the log)."""

    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    code = "internal"


class APIError(exceptions.APIException):
    """A MeshError (or a database outage) carried through DRF's handler."""

    def __init__(self, message: str, *, status_code: int, code: str, headers: dict[str, str], extra: Any):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.headers = headers
        self.extra = extra


def _as_api_error(exc: Exception) -> Exception:
    if isinstance(exc, MeshError):
        return APIError(exc.message, status_code=exc.status_code, code=exc.code, headers=exc.headers, extra=exc.extra)
    if isinstance(exc, RequestDataTooBig):
        return APIError(
            "Request body too large", status_code=413, code="too_large", headers={}, extra=None
        )
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The store is down or restarting: a retryable condition, not a server bug.
        return APIError(
            STORE_UNAVAILABLE, status_code=503, code=Unavailable.code, headers={"Retry-After": "5"}, extra=None,
        )
    return exc


def flatten_detail(detail: Any) -> str:
    """One readable sentence out of DRF's nested error details."""
    if isinstance(detail, dict):
        parts = []
        for key, value in detail.items():
            text = flatten_detail(value)
            parts.append(text if key in ("non_field_errors", "detail") else f"{key}: {text}")
        return "; ".join(parts)
    if isinstance(detail, list):
        return "; ".join(flatten_detail(item) for item in detail)
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    exc = _as_api_error(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    shape = getattr(context.get("view"), "error_shape", "native")
    if shape in SAP_SHAPES:
        response.data = sap_body(flatten_detail(response.data), status_code=response.status_code, shape=shape)
    else:
        code = getattr(getattr(exc, "detail", None), "code", None) or _default_code(exc)
        response.data = {
            "detail": flatten_detail(response.data),
            "code": code,
            "extra": getattr(exc, "extra", None) or _extra(response.data),
        }
    for name, value in getattr(exc, "headers", {}).items():
        response[name] = value
    return response


SAP_SHAPES = ("sap", "sap-webhooks")


def sap_body(message: str, *, status_code: int, shape: str = "sap") -> dict[str, Any]:
    """An error body in SAP's shape for views of `shape` (one of SAP_SHAPES)."""
    if shape == "sap-webhooks" and status_code == status.HTTP_409_CONFLICT:
        return {"error": {"code": "CONFLICT", "message": message}}
    return {"message": message}


def _default_code(exc: Exception) -> str:
    return getattr(exc, "default_code", "error")


def _extra(data: Any) -> Any:
    return data if isinstance(data, dict) and "detail" not in data else None


def json_error(message: str, status_code: int) -> JsonResponse:
    return JsonResponse(sap_body(message, status_code=status_code), status=status_code)


# meshsite's own APIs (not SAP's), whose unrouted paths answer in meshsite's error shape.
NATIVE_PATH_PREFIXES = ("/api/v1/pv/", "/public/v1/", "/elements/api-v2/")


def handler404(request: HttpRequest, exception: Exception | None = None):
    if request.path.startswith(NATIVE_PATH_PREFIXES):
        return JsonResponse({"detail": "Not found", "code": "not_found"}, status=404)
    if request.path.startswith(RAW_PATH_PREFIXES) or request.path.startswith(("/api/", "/oauth/")):
        return json_error("Not found", 404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)  # type: ignore[arg-type]


def handler500(request: HttpRequest):
    if request.path.startswith(NATIVE_PATH_PREFIXES):
        return JsonResponse({"detail": "Internal error", "code": "error"}, status=500)
    if request.path.startswith(RAW_PATH_PREFIXES) or request.path.startswith(("/api/", "/oauth/")):
        return json_error("Internal error", 500)
    from django.views.defaults import server_error

    return server_error(request)
