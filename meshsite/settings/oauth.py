from django.conf import global_settings

from .env import env_bool, env_int

# Service keys are OAuth2 client-credentials applications. Client secrets are 256 random bits,
# stored as HMAC-SHA256 under a key derived from SECRET_KEY (meshsite/platform/hashers.py says
# why not PBKDF2); access tokens are stored only as their SHA-256 checksum (RFC 9700 storage),
# so a database dump holds no usable credential.
MESH_TOKEN_LIFETIME = env_int("MESH_TOKEN_LIFETIME", 12 * 3600, minimum=60)
# Seconds a process keeps a token's resolution (0 = look it up on every request).
MESH_TOKEN_CACHE_SECONDS = env_int("MESH_TOKEN_CACHE_SECONDS", 5)

# Answer service keys' client-credentials requests in the event loop, without oauthlib or the
# ORM (meshsite/platform/tokenpath.py); off, every request goes to django-oauth-toolkit.
MESH_TOKEN_FAST_PATH = env_bool("MESH_TOKEN_FAST_PATH", True)

# Failed client authentications at /oauth/token, counted per window (0 = no limit). Past the
# per-address limit an address is refused before any work; past the per-client limit a wrong
# secret for that client id is answered 429, while its right secret still gets a token.
MESH_TOKEN_FAILURE_WINDOW = env_int("MESH_TOKEN_FAILURE_WINDOW", 60, minimum=1)
MESH_TOKEN_FAILURES_PER_CLIENT = env_int("MESH_TOKEN_FAILURES_PER_CLIENT", 20, minimum=0)
MESH_TOKEN_FAILURES_PER_ADDRESS = env_int("MESH_TOKEN_FAILURES_PER_ADDRESS", 100, minimum=0)

# A 429 from /oauth/token is held this long (at most its Retry-After) before it is sent, with
# Connection: close, so a refused client waits instead of asking again at once (tarpit.py);
# 0 = answer at once. At most MESH_TOKEN_REFUSAL_HOLD_MAX are held at once per process; past
# it a refusal is answered at once, still with Connection: close.
MESH_TOKEN_REFUSAL_DELAY_MS = env_int("MESH_TOKEN_REFUSAL_DELAY_MS", 1000, minimum=0)
MESH_TOKEN_REFUSAL_HOLD_MAX = env_int("MESH_TOKEN_REFUSAL_HOLD_MAX", 256, minimum=0)

# Appended, never first: people's passwords keep Django's default (PBKDF2).
PASSWORD_HASHERS = [*global_settings.PASSWORD_HASHERS, "meshsite.platform.hashers.HMACSecretHasher"]

OAUTH2_PROVIDER = {
    "ACCESS_TOKEN_EXPIRE_SECONDS": MESH_TOKEN_LIFETIME,
    "SCOPES": {"em": "Event Mesh messaging and management"},
    "DEFAULT_SCOPES": ["em"],
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "PKCE_REQUIRED": False,
    "CLIENT_SECRET_HASHER": "meshsite_hmac",
    "OAUTH2_VALIDATOR_CLASS": "meshsite.platform.validators.MeshOAuth2Validator",
}

OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"
OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL = "oauth2_provider.AccessToken"
