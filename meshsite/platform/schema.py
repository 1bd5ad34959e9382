"""The OpenAPI document's parts that drf-spectacular cannot derive: the service-key security
scheme, and /oauth/token, a plain Django view (oauthlib answers it, not DRF) in both the
standard POST form and the GET form that CAP clients use."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import serializers

TOKEN_PATH = "/oauth/token"
TAG = "OAuth 2.0"


class MeshErrorSerializer(serializers.Serializer):
    """The error body of meshsite's own endpoints: one component for all of them."""

    detail = serializers.CharField()
    code = serializers.CharField()
    extra = serializers.JSONField(required=False, allow_null=True)


class ServiceKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "meshsite.platform.auth.ServiceKeyAuthentication"
    name = "serviceKeyToken"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return {
            "type": "oauth2",
            "description": "Client credentials of a service key; token from /oauth/token",
            "flows": {"clientCredentials": {"tokenUrl": TOKEN_PATH, "scopes": {"em": "Event Mesh"}}},
        }


_GRANT = {"type": "string", "enum": ["client_credentials"]}
_CREDENTIAL = {"type": "string", "minLength": 1}
_TOKEN_PARAMETERS: dict[str, dict[str, Any]] = {
    "grant_type": {"schema": _GRANT, "required": True},
    "client_id": {"schema": _CREDENTIAL, "description": "Instead of HTTP Basic"},
    "client_secret": {"schema": _CREDENTIAL, "description": "Instead of HTTP Basic"},
    "scope": {"schema": {"type": "string"}, "description": "`em`, the only scope (the default)"},
}


def _json(schema_name: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
    }
    if headers:
        answer["headers"] = headers
    return answer


def _token_responses() -> dict[str, Any]:
    challenge = {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}}
    retry = {"Retry-After": {"schema": {"type": "integer"}, "required": True}}
    return {
        "200": _json("Token", "A bearer token for the service key's instance"),
        "400": _json("OAuthError", "RFC 6749 5.2: invalid_request, unsupported_grant_type, invalid_scope, ..."),
        "401": _json("OAuthError", "Unknown client or wrong secret", challenge),
        "429": _json("OAuthError", "Too many failed authentications: for this client id (invalid_client; "
                     "its right secret is still served) or from this address (temporarily_unavailable)", retry),
        "503": _json("OAuthError", "The store is unavailable (temporarily_unavailable)", retry),
    }


def _token_operation(operation_id: str, summary: str) -> dict[str, Any]:
    return {
        "operationId": operation_id, "summary": summary, "tags": [TAG],
        # HTTP Basic with the key's clientid and clientsecret, or both in the parameters.
        "security": [{"clientBasic": []}, {}],
        "responses": _token_responses(),
    }


def _token_path() -> dict[str, Any]:
    query = [
        {"in": "query", "name": name, **spec} for name, spec in _TOKEN_PARAMETERS.items()
    ] + [{"in": "query", "name": "response_type", "schema": {"type": "string", "enum": ["token"]},
          "description": "Sent by CAP; ignored"}]
    get = _token_operation("oauth_token_get", "Get a token (the GET form CAP uses)")
    get["parameters"] = query
    post = _token_operation("oauth_token_post", "Get a token (RFC 6749 client credentials grant)")
    form = {
        "type": "object",
        "properties": {name: {**spec["schema"], **({"description": spec["description"]} if "description" in spec
                                                    else {})} for name, spec in _TOKEN_PARAMETERS.items()},
        "required": ["grant_type"],
    }
    post["requestBody"] = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": form}}}
    return {"get": get, "post": post}


_TOKEN_SCHEMAS = {
    "Token": {
        "type": "object",
        "properties": {
            "access_token": {"type": "string"},
            "token_type": {"type": "string", "enum": ["bearer"]},
            "expires_in": {"type": "integer", "description": "Seconds (MESH_TOKEN_LIFETIME)"},
            "scope": {"type": "string"},
        },
        "required": ["access_token", "token_type", "expires_in", "scope"],
    },
    "OAuthError": {
        "type": "object",
        "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
        "required": ["error"],
    },
}


def add_token_endpoint(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular post-processing hook: document /oauth/token as it answers."""
    result["paths"] = {TOKEN_PATH: _token_path(), **result.get("paths", {})}
    components = result.setdefault("components", {})
    components.setdefault("schemas", {}).update(_TOKEN_SCHEMAS)
    components.setdefault("securitySchemes", {})["clientBasic"] = {
        "type": "http", "scheme": "basic", "description": "The service key's clientid and clientsecret",
    }
    return result
