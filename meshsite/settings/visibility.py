from .env import env_int

# Events one processing batch takes from the buffer (one transaction).
MESH_PV_PROCESSING_BATCH = env_int("MESH_PV_PROCESSING_BATCH", 5000, minimum=1)
