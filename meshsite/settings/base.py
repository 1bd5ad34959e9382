from pathlib import Path
from urllib.parse import urlsplit

from django.core.management.utils import get_random_secret_key

from .env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("MESH_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    # The embedded default keeps a generated key under var/ so sessions survive restarts
    # without anyone having to invent a secret; production sets SECRET_KEY.
    key = env_str("SECRET_KEY", "")
    if key:
        return key
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(get_random_secret_key())
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
# Previous keys, while rotating: sessions and sealed webhook credentials still open with them.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])
_public_host = urlsplit(env_str("MESH_PUBLIC_URL", "http://127.0.0.1:8000")).hostname or "127.0.0.1"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", sorted({"127.0.0.1", "localhost", "[::1]", "testserver", _public_host}))
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
if env_bool("MESH_TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# HSTS on answers to HTTPS requests (every path, the APIs included: meshsite/apiguard.py).
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "oauth2_provider",
    "channels",
    "meshsite.platform",
    "messaging",
    "visibility",
]

MIDDLEWARE = [
    "meshsite.middleware.raw_path_middleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files from the application itself (admin, cockpit, API docs), hashed and
    # compressed. Sync-only, so it sits in this (admin/cockpit) stack and never in the lean
    # API stack of meshsite/apihandler.py, whose paths it would never serve anyway.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "meshsite.urls"

# The cockpit signs people in at /login/ (the admin keeps its own form at /admin/login/).
LOGIN_URL = "cockpit:login"
LOGIN_REDIRECT_URL = "cockpit:home"
LOGOUT_REDIRECT_URL = "cockpit:login"
ASGI_APPLICATION = "meshsite.asgi.application"
WSGI_APPLICATION = "meshsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed, compressed names after collectstatic; plain names where nothing was collected
    # (tests, a fresh checkout): see meshsite/staticstorage.py for why.
    "staticfiles": {"BACKEND": "meshsite.staticstorage.StaticStorage"},
}
# Source maps are more than half the collected bytes (the API docs' bundles) and are only
# fetched by a developer's browser tools: compressing them doubled a first collectstatic
# (measured on a loaded 2-core machine: 66 s with them, 34 s without).
WHITENOISE_SKIP_COMPRESS_EXTENSIONS = [
    "jpg", "jpeg", "png", "gif", "webp", "zip", "gz", "tgz", "bz2", "tbz", "xz", "br",
    "woff", "woff2", "mp4", "webm", "map",
]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["meshsite.jsonlimit.DepthLimitedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "meshsite.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "meshsite API",
    "DESCRIPTION": (
        "SAP Event Mesh compatible management and messaging REST APIs. Queue and topic names, "
        "topic patterns and webhook subscription names are documented as their decoded values and "
        "travel as ONE percent-encoded path segment (a/b/c/orders as a%2Fb%2Fc%2Forders). Errors "
        "of these endpoints are SAP's {\"message\": \"...\"}; /oauth/token answers RFC 6749's "
        "{\"error\": \"...\"}. The Open Connectors APIs (/elements/api-v2/) answer meshsite's own "
        "{\"detail\", \"code\", \"extra\"}."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # The connectors' answers reuse field names (status, type, state) for other choice sets: each
    # set gets its own name, and the sets named before the connectors keep theirs.
    "ENUM_NAME_OVERRIDES": {
        "StatusEnum": ["ready"],
        "StateEnum": ["draft", "active", "active-with-draft"],
        "TypeEnum": ["webhook"],
        "ConnectorDeliveryStateEnum": "messaging.api.connectors_schema.DELIVERY_STATES",
        "ConnectorVendorEventStatusEnum": "messaging.api.connectors_schema.VENDOR_EVENT_STATUSES",
        "FormulaExecutionStatusEnum": "messaging.api.connectors_schema.EXECUTION_STATUSES",
        "FormulaStepTypeEnum": "messaging.api.connectors_schema.STEP_TYPES",
        "FormulaStepStatusEnum": "messaging.api.connectors_schema.STEP_STATUSES",
    },
    # /oauth/token and the providers' webhook endpoint are plain Django views; hooks document them.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "meshsite.platform.schema.add_token_endpoint",
        "messaging.api.connector_events_schema.add_connector_events_endpoints",
    ],
    # Swagger UI and ReDoc from our own static files, so the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # 4xx at INFO (WARNING is for what an operator must look at), raw request paths.
    "filters": {"request_log": {"()": "meshsite.logfilters.RequestLogFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "django.request": {"filters": ["request_log"]},
    },
}
