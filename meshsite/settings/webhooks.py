from .env import env_bool, env_float_list, env_int, env_list

# Outbound HTTP (webhook pushes, oauth2 token fetches, handshakes) goes only to public
# addresses; these CIDR ranges are admitted in addition, e.g. "127.0.0.0/8" for a receiver
# on a developer's machine.
MESH_WEBHOOK_ALLOWED_NETWORKS = env_list("MESH_WEBHOOK_ALLOWED_NETWORKS", [])
MESH_WEBHOOK_CONNECT_TIMEOUT = env_int("MESH_WEBHOOK_CONNECT_TIMEOUT", 5, minimum=1)
MESH_WEBHOOK_TIMEOUT = env_int("MESH_WEBHOOK_TIMEOUT", 15, minimum=1)
MESH_WEBHOOK_MAX_RESPONSE_BYTES = env_int("MESH_WEBHOOK_MAX_RESPONSE_BYTES", 64 * 1024, minimum=1024)
MESH_MAX_WEBHOOKS_PER_INSTANCE = env_int("MESH_MAX_WEBHOOKS_PER_INSTANCE", 100, minimum=1)
# Seconds before retry n (the last value repeats), each with ±20% jitter; a receiver's
# Retry-After on 429/503 is honoured instead (capped by the last value).
MESH_WEBHOOK_RETRY_SCHEDULE = env_float_list("MESH_WEBHOOK_RETRY_SCHEDULE", [5, 30, 120, 600, 1800, 3600])
# An endpoint failing without a single success for this long pauses its subscription.
MESH_WEBHOOK_PAUSE_AFTER = env_int("MESH_WEBHOOK_PAUSE_AFTER", 24 * 3600, minimum=1)
# Messages one task run pushes before handing over to the next run (fairness between
# subscriptions sharing a worker).
MESH_WEBHOOK_BATCH = env_int("MESH_WEBHOOK_BATCH", 500, minimum=1)
# Messages a run claims in one statement and settles in one transaction. A crash between
# a push and its settle redelivers at most this many; more means fewer commits per push.
MESH_WEBHOOK_PREFETCH = env_int("MESH_WEBHOOK_PREFETCH", 50, minimum=1)
# Slow start after a resume: the backlog goes out at this many deliveries per second,
# doubling every MESH_WEBHOOK_RESUME_RAMP seconds until the rate reaches
# MESH_WEBHOOK_RESUME_FULL_RATE (then unlimited) or the backlog is delivered. 0 turns it off.
MESH_WEBHOOK_RESUME_RATE = env_int("MESH_WEBHOOK_RESUME_RATE", 10, minimum=0)
MESH_WEBHOOK_RESUME_RAMP = env_int("MESH_WEBHOOK_RESUME_RAMP", 5, minimum=1)
MESH_WEBHOOK_RESUME_FULL_RATE = env_int("MESH_WEBHOOK_RESUME_FULL_RATE", 1000, minimum=1)
# Days the delivery log keeps an attempt; the webhook sweep deletes older ones. 0 keeps all.
MESH_WEBHOOK_ATTEMPT_RETENTION_DAYS = env_int("MESH_WEBHOOK_ATTEMPT_RETENTION_DAYS", 7, minimum=0)
# Publishing hands the wake-up of webhook delivery to a background thread instead of sending
# it on the request's own thread (the sweep replaces any that are lost). Off: sent inline.
MESH_WEBHOOK_WAKE_IN_BACKGROUND = env_bool("MESH_WEBHOOK_WAKE_IN_BACKGROUND", True)
# Seconds a worker thread keeps an idle connection to a receiver for its next push.
MESH_WEBHOOK_KEEPALIVE = env_int("MESH_WEBHOOK_KEEPALIVE", 30, minimum=1)
