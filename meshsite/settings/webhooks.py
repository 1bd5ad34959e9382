from .env import env_float_list, env_int, env_list

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
# Messages one task run pushes before handing over to the next run (fairness, steady rate).
MESH_WEBHOOK_BATCH = env_int("MESH_WEBHOOK_BATCH", 100, minimum=1)
