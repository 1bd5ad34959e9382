from datetime import timedelta

from .base import VAR_DIR
from .connectors import MESH_CONNECTOR_TICK
from .env import env_int, env_str

# REDIS_URL switches the channel layer and the Celery broker to Redis. Without it the
# channel layer is in-memory (one process) and Celery uses a file-system broker under
# var/, which works across the processes `make run` starts and needs no server.
REDIS_URL = env_str("REDIS_URL", "")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
    # Celery 5.7.0's own consumer exits when Redis restarts under a task in flight; this
    # one reconnects (the reason is in meshsite/celery.py).
    CELERY_WORKER_CONSUMER = "meshsite.celery:MeshConsumer"
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("in", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "in"),
        "data_folder_out": str(_broker_dir / "in"),
        "processed_folder": str(_broker_dir / "processed"),
        # kombu's exchange tables; its default is a folder in the working directory.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }

CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Reconnect to a lost broker for as long as it takes (Celery's default gives up after 100
# attempts, about 45 minutes at its 30 s cap, and the worker then exits): a Redis outage
# only delays wake-ups, so a worker should be there when Redis returns.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None

MESH_SWEEP_INTERVAL = env_int("MESH_SWEEP_INTERVAL", 5, minimum=1)
# Messages one sweep statement moves (its own short transaction); a sweep runs batches until
# done or for MESH_SWEEP_INTERVAL.
MESH_SWEEP_BATCH = env_int("MESH_SWEEP_BATCH", 1000, minimum=1)

# Process Visibility's scheduled processing: every instance's buffer folded into process
# instances, and open instances' status moved on as time passes.
MESH_PV_PROCESSING_INTERVAL = env_int("MESH_PV_PROCESSING_INTERVAL", 300, minimum=1)

CELERY_BEAT_SCHEDULE = {
    "visibility-process": {
        "task": "visibility.tasks.process_all",
        "schedule": timedelta(seconds=MESH_PV_PROCESSING_INTERVAL),
    },
    "messaging-sweep": {
        "task": "messaging.tasks.sweep_queues",
        "schedule": timedelta(seconds=MESH_SWEEP_INTERVAL),
    },
    "messaging-sweep-webhooks": {
        "task": "messaging.tasks.sweep_webhooks",
        "schedule": timedelta(seconds=MESH_SWEEP_INTERVAL),
    },
    # Connector events: polls whose time has come, vendor bodies and formula executions a
    # lost wake-up left behind (every due time is a database column, so a changed poll
    # interval needs no restart).
    "connectors-tick": {
        "task": "messaging.tasks.connectors_tick",
        "schedule": timedelta(seconds=MESH_CONNECTOR_TICK),
    },
    "platform-clear-expired-tokens": {
        "task": "meshsite.platform.tasks.clear_expired_tokens",
        "schedule": timedelta(hours=1),
    },
}
