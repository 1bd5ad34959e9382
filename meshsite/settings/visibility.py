from .env import env_int

# Process Visibility's Data Acquisition API (POST /public/v1/events). A body holds at most
# MESH_PV_MAX_BATCH events and MESH_PV_MAX_BODY bytes (below the server-wide
# MESH_MAX_REQUEST_BODY, which answers 413 before Django reads anything); each event's
# context at most MESH_PV_MAX_CONTEXT_KEYS attributes. A refused body is kept for the Event
# Acquisition monitor cut at MESH_PV_MAX_FAILURE_RAW characters.
MESH_PV_MAX_BATCH = env_int("MESH_PV_MAX_BATCH", 1000, minimum=1)
MESH_PV_MAX_BODY = env_int("MESH_PV_MAX_BODY", 1024 * 1024, minimum=1024)
MESH_PV_MAX_CONTEXT_KEYS = env_int("MESH_PV_MAX_CONTEXT_KEYS", 200, minimum=1)
MESH_PV_MAX_FAILURE_RAW = env_int("MESH_PV_MAX_FAILURE_RAW", 64 * 1024, minimum=1024)

# Events one processing batch takes from the buffer (one transaction).
MESH_PV_PROCESSING_BATCH = env_int("MESH_PV_PROCESSING_BATCH", 5000, minimum=1)
