import dj_database_url

from .base import VAR_DIR
from .env import env_int, env_str

# DATABASE_URL selects the store: PostgreSQL in production, SQLite (the embedded default)
# when unset. SQLite runs in WAL mode with IMMEDIATE transactions so that writers queue on
# the busy timeout instead of failing with "database is locked" mid-transaction.
_url = env_str("DATABASE_URL", "")
if _url:
    _db = dj_database_url.parse(
        _url,
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
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
