from .env import env_float_list, env_int

# Connector events (messaging.connectors). A provider's webhook body is at most
# MESH_CONNECTOR_MAX_BODY bytes and yields at most MESH_CONNECTOR_MAX_OBJECTS event objects.
MESH_CONNECTOR_MAX_BODY = env_int("MESH_CONNECTOR_MAX_BODY", 1024 * 1024, minimum=1024)
MESH_CONNECTOR_MAX_OBJECTS = env_int("MESH_CONNECTOR_MAX_OBJECTS", 10_000, minimum=1)
# Every notification repeats the provider's whole body, so one body makes (objects / 20)
# copies of it: their bytes in all are capped here (a larger body is marked failed).
MESH_CONNECTOR_MAX_FANOUT_BYTES = env_int("MESH_CONNECTOR_MAX_FANOUT_BYTES", 64 * 1024 * 1024, minimum=1024 * 1024)

# Delivery to callback URLs goes through the Event Mesh webhook engine (its retry schedule,
# MESH_WEBHOOK_RETRY_SCHEDULE); after this many attempts a notification waits, queued for
# its instance, until it is redelivered.
MESH_CONNECTOR_DELIVERY_ATTEMPTS = env_int("MESH_CONNECTOR_DELIVERY_ATTEMPTS", 6, minimum=2)

# How often the scheduler looks for polls and formula executions that are due (seconds).
MESH_CONNECTOR_TICK = env_int("MESH_CONNECTOR_TICK", 30, minimum=1)
# One poll: each request's timeout (s), the pages it follows, and how many reported record
# versions an object type remembers to leave out duplicates.
MESH_CONNECTOR_POLL_TIMEOUT = env_int("MESH_CONNECTOR_POLL_TIMEOUT", 30, minimum=1)
MESH_CONNECTOR_POLL_MAX_PAGES = env_int("MESH_CONNECTOR_POLL_MAX_PAGES", 100, minimum=1)
MESH_CONNECTOR_POLL_SEEN_LIMIT = env_int("MESH_CONNECTOR_POLL_SEEN_LIMIT", 10_000, minimum=100)

# Event-triggered formulas: attempts of one execution, and the waits between them (s).
MESH_CONNECTOR_FORMULA_ATTEMPTS = env_int("MESH_CONNECTOR_FORMULA_ATTEMPTS", 5, minimum=1)
MESH_CONNECTOR_FORMULA_RETRY_SCHEDULE = env_float_list("MESH_CONNECTOR_FORMULA_RETRY_SCHEDULE", [5, 30, 120, 600])

# The event log: queued notifications one answer lists, and the part of a provider's body shown.
MESH_CONNECTOR_MAX_LISTED = env_int("MESH_CONNECTOR_MAX_LISTED", 1000, minimum=1)
MESH_CONNECTOR_MAX_SHOWN_BODY = env_int("MESH_CONNECTOR_MAX_SHOWN_BODY", 64 * 1024, minimum=1024)

# The event log's retention in days (0 keeps everything): older provider bodies, polls,
# finished formula executions and delivered notifications are deleted by the connectors'
# tick. A notification its delivery queues still hold stays, however old.
MESH_CONNECTOR_LOG_RETENTION_DAYS = env_int("MESH_CONNECTOR_LOG_RETENTION_DAYS", 7, minimum=0)

# A provider's signed timestamp (HubSpot's X-HubSpot-Request-Timestamp) further than this many
# seconds from when the body was received is refused: HubSpot's rule is 5 minutes.
MESH_CONNECTOR_SIGNATURE_MAX_AGE = env_int("MESH_CONNECTOR_SIGNATURE_MAX_AGE", 300, minimum=1)
