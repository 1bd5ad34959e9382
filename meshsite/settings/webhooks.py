from .env import env_int, env_list

# Outbound HTTP (webhook pushes, oauth2 token fetches, handshakes) goes only to public
# addresses; these CIDR ranges are admitted in addition, e.g. "127.0.0.0/8" for a receiver
# on a developer's machine.
MESH_WEBHOOK_ALLOWED_NETWORKS = env_list("MESH_WEBHOOK_ALLOWED_NETWORKS", [])
MESH_WEBHOOK_CONNECT_TIMEOUT = env_int("MESH_WEBHOOK_CONNECT_TIMEOUT", 5, minimum=1)
MESH_WEBHOOK_TIMEOUT = env_int("MESH_WEBHOOK_TIMEOUT", 15, minimum=1)
MESH_WEBHOOK_MAX_RESPONSE_BYTES = env_int("MESH_WEBHOOK_MAX_RESPONSE_BYTES", 64 * 1024, minimum=1024)
MESH_MAX_WEBHOOKS_PER_INSTANCE = env_int("MESH_MAX_WEBHOOKS_PER_INSTANCE", 100, minimum=1)
