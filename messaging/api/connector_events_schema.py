"""The OpenAPI document's part that drf-spectacular cannot derive for Open Connectors: the
providers' webhook endpoint `/elements/api-v2/events/{element_key}/[{token}/]`, a plain Django
view (connector_events.py) with no bearer token, and the open-connectors token's security
scheme that the other connectors operations name (connectors_schema.py). Registered in
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"], as meshsite.platform.schema's /oauth/token is."""

from __future__ import annotations

from typing import Any

from ..connectors.instances import ELEMENT_KEYS
from .connectors_schema import SECURITY_SCHEME

EVENTS_PATH = "/elements/api-v2/events/{element_key}/"
INSTANCE_EVENTS_PATH = "/elements/api-v2/events/{element_key}/{token}/"
PROVIDER_WEBHOOKS = "Open Connectors: provider webhooks"
_ELEMENT_KEY = {
    "in": "path", "name": "element_key", "required": True,
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,100}$", "example": "hubspot"},
    "description": f"The element ({', '.join(sorted(ELEMENT_KEYS))}); another is not found",
}
_TOKEN = {
    "in": "path", "name": "token", "required": True, "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"},
    "description": "The connector instance's webhook token (the end of its `eventsUrl`)",
}
_CHALLENGE = {"in": "query", "name": "challenge", "schema": {"type": "string"},
              "description": "Echoed back (its first 512 characters): Dropbox's verification of a webhook URL"}
_RECEIVED = {
    "type": "object", "required": ["id", "status"],
    "properties": {"id": {"type": "integer", "description": "The stored body's id (the event log's vendor-events)"},
                   "status": {"type": "string", "enum": ["received"]}},
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(description: str, schema: str = "MeshError", **headers: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}
    if headers:
        answer["headers"] = {name.replace("_", "-"): spec for name, spec in headers.items()}
    return answer


_NO_ROUTE = _answer("A path parameter breaks its pattern (no such route)")


def _webhook_post(operation_id: str, summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "operationId": operation_id, "summary": summary, "tags": [PROVIDER_WEBHOOKS], "parameters": parameters,
        "security": [],  # providers have no token; the URL's token names the instance
        "requestBody": {"required": False, "content": {
            "application/json": {"schema": {}},
            "*/*": {"schema": {"type": "string", "format": "binary"}},
        }, "description": "Whatever the provider sends: stored as it is, normalized afterwards (a body that "
                          "makes nothing is kept, marked failed with the reason)"},
        "responses": {
            "200": {"description": "Stored (nothing else happens before the answer)",
                    "content": {"application/json": {"schema": _RECEIVED}}},
            "401": _answer("The provider's signature does not verify (elements whose signature is checked)"),
            "404": _answer("Unknown element, or no connector instance of this element has this token; nothing "
                           "is stored"),
            "405": _answer("A method other than GET or POST", Allow={"schema": {"type": "string"}, "required": True}),
            "413": _answer("Over MESH_CONNECTOR_MAX_BODY bytes; nothing is stored", "ConnectorTooLarge"),
            "503": _answer("The store is unavailable; nothing is stored (retry after `Retry-After` seconds)",
                           Retry_After={"schema": {"type": "integer"}, "required": True}),
        },
    }


def _webhook_get(operation_id: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "operationId": operation_id, "summary": "Verify the webhook URL (echo `challenge`)",
        "tags": [PROVIDER_WEBHOOKS], "parameters": [*parameters, _CHALLENGE], "security": [],
        "responses": {"200": {"description": "`challenge` as it came", "content": {"text/plain": {
            "schema": {"type": "string"}}}}, "404": _NO_ROUTE},
    }


def connector_events_paths() -> dict[str, Any]:
    account = "Receive a provider's webhook for the instances whose `providerAccount` its body names"
    return {
        EVENTS_PATH: {"get": _webhook_get("connector_provider_events_verify", [_ELEMENT_KEY]),
                      "post": _webhook_post("connector_provider_events_receive", account, [_ELEMENT_KEY])},
        INSTANCE_EVENTS_PATH: {
            "get": _webhook_get("connector_instance_events_verify", [_ELEMENT_KEY, _TOKEN]),
            "post": _webhook_post("connector_instance_events_receive",
                                  "Receive a provider's webhook for one instance (its `eventsUrl`)",
                                  [_ELEMENT_KEY, _TOKEN]),
        },
    }


def add_connector_events_endpoints(result: dict[str, Any], generator: Any, request: Any,
                                   public: bool) -> dict[str, Any]:
    """drf-spectacular post-processing hook: the providers' webhook endpoint, which is a plain
    Django view, and the open-connectors token the other connectors operations name."""
    result.setdefault("paths", {}).update(connector_events_paths())
    schemes = result.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[SECURITY_SCHEME] = {
        "type": "oauth2",
        "description": "Client credentials of an open-connectors service key; token from /oauth/token",
        "flows": {"clientCredentials": {"tokenUrl": "/oauth/token", "scopes": {}}},
    }
    return result
