from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ServiceKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "meshsite.platform.auth.ServiceKeyAuthentication"
    name = "serviceKeyToken"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return {
            "type": "oauth2",
            "description": "Client credentials of a service key; token from /oauth/token",
            "flows": {"clientCredentials": {"tokenUrl": "/oauth/token", "scopes": {"em": "Event Mesh"}}},
        }
