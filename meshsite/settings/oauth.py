from .env import env_int

# Service keys are OAuth2 client-credentials applications. Client secrets are hashed by
# django-oauth-toolkit; access tokens are stored only as their SHA-256 checksum (RFC 9700
# storage), so a database dump holds no usable credential.
MESH_TOKEN_LIFETIME = env_int("MESH_TOKEN_LIFETIME", 12 * 3600, minimum=60)
# Seconds a process keeps a token's resolution (0 = look it up on every request).
MESH_TOKEN_CACHE_SECONDS = env_int("MESH_TOKEN_CACHE_SECONDS", 5)

OAUTH2_PROVIDER = {
    "ACCESS_TOKEN_EXPIRE_SECONDS": MESH_TOKEN_LIFETIME,
    "SCOPES": {"em": "Event Mesh messaging and management"},
    "DEFAULT_SCOPES": ["em"],
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "PKCE_REQUIRED": False,
}

OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"
OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL = "oauth2_provider.AccessToken"
