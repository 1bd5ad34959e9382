"""The messaging hot path: publish, consume and acknowledge over REST without a thread per
request, DRF or the ORM per message.

meshsite/asgi.py puts `HotPath` in front of Django. It serves POSTs to the four messaging
REST addresses on the event loop with the service's own checks (the same functions, so the
same answers), the store's own SQL through async psycopg, per-process caches of tokens and
queues, and group commit for publishes. The DRF views in messaging/api/rest.py stay: they
serve the same addresses when MESH_HOT_PATH is off, under the test client, and they are
what the OpenAPI document is built from.

    routes     which requests are served here
    http       reading requests, writing answers exactly as the DRF views do
    database   async psycopg (PostgreSQL) or one writer thread (SQLite)
    catalog    queues and topic subscribers, cached with bounded staleness
    writer     group commit
    endpoints  the four operations
    app        the ASGI middleware
"""

from .app import HotPath, bearer_client, endpoints, token_client, token_still_valid

__all__ = ["HotPath", "bearer_client", "endpoints", "token_client", "token_still_valid"]
