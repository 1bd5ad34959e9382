from .env import env_str

# Django's cache holds state that every process must share: today the failed-authentication
# counters of the token endpoint (meshsite/platform/ratelimit.py). On the Redis REDIS_URL
# names when it is set (a key prefix keeps it apart from the channel layer and the broker);
# per process in the embedded default, which runs one server process.
_REDIS_URL = env_str("REDIS_URL", "")

if _REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": _REDIS_URL,
            "KEY_PREFIX": "meshsite",
            # A Redis that does not answer costs a token request at most this, not a hang:
            # the limiter then lets requests through (it fails open).
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "meshsite"}}
