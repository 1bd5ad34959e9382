from .env import env_bool, env_int, env_str

# The base URL written into service keys. It is what clients connect to, which is not
# always the address the server binds (a proxy or load balancer may sit in front).
MESH_PUBLIC_URL = env_str("MESH_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")

MESH_MAX_MESSAGE_SIZE = env_int("MESH_MAX_MESSAGE_SIZE", 1024 * 1024, minimum=1)
# Request bodies on any path are capped at the ASGI layer before Django buffers them.
MESH_MAX_REQUEST_BODY = env_int("MESH_MAX_REQUEST_BODY", MESH_MAX_MESSAGE_SIZE + 64 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MESH_MAX_REQUEST_BODY
# Deepest nesting of arrays and objects accepted in client JSON. Python's decoder recurses
# per level and fails at ~1000; the bodies meshsite defines nest at most 4 deep.
MESH_MAX_JSON_DEPTH = env_int("MESH_MAX_JSON_DEPTH", 32, minimum=1)

MESH_DEFAULT_EXPIRATION_MS = env_int("MESH_DEFAULT_EXPIRATION_MS", 30 * 24 * 3600 * 1000, minimum=1)
MESH_MAX_EXPIRATION_MS = env_int("MESH_MAX_EXPIRATION_MS", 30 * 24 * 3600 * 1000, minimum=1)
# How long a qos-1 message stays locked to its consumer before it returns to the queue.
MESH_ACK_TIMEOUT = env_int("MESH_ACK_TIMEOUT", 60, minimum=1)
MESH_MAX_QUEUES_PER_INSTANCE = env_int("MESH_MAX_QUEUES_PER_INSTANCE", 1000, minimum=1)
MESH_MAX_SUBSCRIPTIONS_PER_QUEUE = env_int("MESH_MAX_SUBSCRIPTIONS_PER_QUEUE", 100, minimum=1)
MESH_SUBACCOUNT = env_str("MESH_SUBACCOUNT", "default")

# The hot path (messaging.hotpath): publish, consume and acknowledge served on the event loop.
# Off, the same addresses are served by the DRF views (the same answers, slower).
MESH_HOT_PATH = env_bool("MESH_HOT_PATH", True)
# Its PostgreSQL connections per server process (one event loop each), besides Django's pool.
MESH_HOT_PATH_POOL_SIZE = env_int("MESH_HOT_PATH_POOL_SIZE", 10, minimum=2)
# Group commit: the most message rows one INSERT + COMMIT carries.
MESH_GROUP_COMMIT_MAX_ROWS = env_int("MESH_GROUP_COMMIT_MAX_ROWS", 256, minimum=1)
# How stale a process's cache of queues and topic subscribers may be: it reads the topology
# version at most this often (ms) and forgets the cache when it changed.
MESH_TOPOLOGY_CHECK_MS = env_int("MESH_TOPOLOGY_CHECK_MS", 250, minimum=1)
# maxDeliveredUnackedMsgsPerFlow on the hot path: a consumer far below the limit is recounted
# at most this often (ms) per process instead of on every consume (messaging/hotpath/flow.py).
MESH_FLOW_RECOUNT_MS = env_int("MESH_FLOW_RECOUNT_MS", 1000, minimum=0)
