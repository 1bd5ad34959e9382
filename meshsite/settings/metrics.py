"""The meter (per-minute counts per queue, messaging.metrics) and the /metrics endpoint."""

import ipaddress

from django.core.exceptions import ImproperlyConfigured

from .env import env_int, env_list, env_str

# How often each process writes its counts to the database (one upsert per table per flush).
# What a process counted since its last flush is lost if it crashes: monitoring data, not
# messages. 0: no background flusher (only at exit, or meter_flush() called directly).
MESH_METER_FLUSH_SECONDS = env_int("MESH_METER_FLUSH_SECONDS", 5, minimum=0)
# How long per-minute counts are kept (the cockpit's rates); the totals behind /metrics stay.
MESH_METER_RETENTION_HOURS = env_int("MESH_METER_RETENTION_HOURS", 48, minimum=1)
# /metrics: a scraper that sends `Authorization: Bearer <token>` (when set), or one from these
# networks, may read it; anyone else gets 403.
MESH_METRICS_TOKEN = env_str("MESH_METRICS_TOKEN", "")
MESH_METRICS_ALLOW = env_list("MESH_METRICS_ALLOW", ["127.0.0.1/32", "::1/128"])
try:
    for _network in MESH_METRICS_ALLOW:
        ipaddress.ip_network(_network)
except ValueError as _error:
    raise ImproperlyConfigured(f"MESH_METRICS_ALLOW: {_error}") from None
