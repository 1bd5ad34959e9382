import dj_database_url

from .base import VAR_DIR
from .env import env_int, env_str

# DATABASE_URL selects the store: PostgreSQL in production, SQLite (the embedded default)
# when unset. SQLite runs in WAL mode with IMMEDIATE transactions so that writers queue on
# the busy timeout instead of failing with "database is locked" mid-transaction.
_url = env_str("DATABASE_URL", "")
if _url:
    _db = dj_database_url.parse(_url)
    if _db["ENGINE"] == "django.db.backends.postgresql":
        # Under ASGI every request runs its sync code on a thread of its own, and Django's
        # connections are per thread: without a pool each request would open (and fork) a
        # new PostgreSQL backend. The pool is per process and shared by those threads.
        _db["CONN_MAX_AGE"] = 0
        # Django's backend with the store breaker in front of the pool (meshsite.storebreaker).
        _db["ENGINE"] = "meshsite.dbbackend"
        _options = _db.setdefault("OPTIONS", {})
        # Short waits bound a request's 503 during an outage: the pool timeout is how long a
        # request waits for a connection (10 s before: a thread held that long per request),
        # the connect timeout how long one connection attempt may hang (libpq waits forever
        # by default, and treats 1 as 2).
        _options["connect_timeout"] = env_int("DATABASE_CONNECT_TIMEOUT", 2, minimum=1)
        _options["pool"] = {
            "min_size": env_int("DATABASE_POOL_MIN_SIZE", 2),
            "max_size": env_int("DATABASE_POOL_MAX_SIZE", 20, minimum=1),
            "timeout": env_int("DATABASE_POOL_TIMEOUT", 2, minimum=1),
            # The pool retries a lost connection with a doubling backoff for this long, then
            # gives up and connects again on demand; the default (5 min) let the backoff reach
            # a minute, so a store that came back looked down for that long.
            "reconnect_timeout": 5.0,
        }
    else:
        _db["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60)
        _db["CONN_HEALTH_CHECKS"] = True
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    _db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(VAR_DIR / "meshsite.sqlite3"),
        # A file, not memory, for the test database too: tests start real server and worker
        # processes that must see the same data.
        "TEST": {"NAME": str(VAR_DIR / "test-meshsite.sqlite3")},
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }

DATABASES = {"default": _db}

# During an outage, requests are refused at once; every this many ms one of them tries a
# fresh connection, and the first that succeeds ends the outage for all.
DATABASE_PROBE_INTERVAL_MS = env_int("DATABASE_PROBE_INTERVAL_MS", 1000, minimum=1)
