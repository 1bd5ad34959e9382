"""A Django ASGI handler for the machine-to-machine APIs, with a short middleware stack.

Under ASGI each of Django's stock middlewares runs its sync hooks through a thread hop, and
the SAP-compatible APIs use none of them (no sessions, cookies, CSRF or messages): measured,
the full stack cost ~45% of a publish. The asgi router sends the API prefixes here; the
admin and cockpit keep the full stack. What the skipped middlewares would have checked or
added for an API (ALLOWED_HOSTS, the security headers) comes from meshsite/apiguard.py.
"""

from __future__ import annotations

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.test.utils import override_settings

from meshsite.middleware import RAW_PATH_PREFIXES

API_PREFIXES = (*RAW_PATH_PREFIXES, "/oauth/token")
# The guard first: a foreign Host is refused before anything else runs, and every answer,
# that refusal included, gets the security headers.
API_MIDDLEWARE = ["meshsite.apiguard.api_guard_middleware", "meshsite.middleware.raw_path_middleware"]


class ApiASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler reads the stack from settings.MIDDLEWARE only; this runs once, at start.
        with override_settings(MIDDLEWARE=API_MIDDLEWARE):
            super().load_middleware(is_async=is_async)


def is_api_path(path: str) -> bool:
    script_name = settings.FORCE_SCRIPT_NAME or ""
    return path.removeprefix(script_name).startswith(API_PREFIXES)
