"""WebSocket consumption: the AMQP 1.0 endpoint, the JSON protocol and the live layer that
wakes their consumers (docs/configuration.md, "WebSockets")."""

from .env import env_int, env_str
from .mesh import MESH_MAX_MESSAGE_SIZE

# AMQP 1.0 over WebSocket (/protocols/amqp10ws).
MESH_AMQP_MAX_FRAME_SIZE = env_int("MESH_AMQP_MAX_FRAME_SIZE", 64 * 1024, minimum=512)
# Seconds without a frame from the client before the connection is closed; we advertise
# half of it, so that clients send heartbeats in time (SAP's client: 90 s with keep-alive).
MESH_AMQP_IDLE_TIMEOUT = env_int("MESH_AMQP_IDLE_TIMEOUT", 120, minimum=1)
# Credit granted to a client's sender link, topped up when half is used.
MESH_AMQP_LINK_CREDIT = env_int("MESH_AMQP_LINK_CREDIT", 1000, minimum=1)
# At most this many messages claimed per statement for one receiver link.
MESH_AMQP_CLAIM_BATCH = env_int("MESH_AMQP_CLAIM_BATCH", 100, minimum=1)
MESH_AMQP_MAX_LINKS_PER_CONNECTION = env_int("MESH_AMQP_MAX_LINKS_PER_CONNECTION", 100, minimum=1)
MESH_AMQP_MAX_SESSIONS_PER_CONNECTION = env_int("MESH_AMQP_MAX_SESSIONS_PER_CONNECTION", 16, minimum=1)
# WebSocket connections (AMQP and JSON together) one service instance may hold, across all
# server processes.
MESH_MAX_CONNECTIONS_PER_INSTANCE = env_int("MESH_MAX_CONNECTIONS_PER_INSTANCE", 500, minimum=1)
# Seconds between a connection's housekeeping: its token re-checked (an expired token or a
# deleted service key closes it), its claims and EXCLUSIVE lease renewed.
MESH_WS_HOUSEKEEPING_SECONDS = env_int("MESH_WS_HOUSEKEEPING_SECONDS", 10, minimum=1)
# Milliseconds a connection gathers its clients' outcomes (accept, release, reject, ack,
# nack) before writing them in one statement; 0 writes at once.
MESH_WS_SETTLE_BATCH_MS = env_int("MESH_WS_SETTLE_BATCH_MS", 5, minimum=0)

# The live layer: how a consumer learns of new messages. Same-process publishes wake it at
# once; other processes' through the channel layer (Redis); and every MESH_LIVE_POLL_MS the
# queues with idle consumers are checked in the database, so a lost wake-up only delays.
MESH_LIVE_POLL_MS = env_int("MESH_LIVE_POLL_MS", 1000, minimum=10)
# How long a process trusts what it read about other processes' consumers (whether to send
# them wake-ups and live topic messages at all).
MESH_LIVE_INTEREST_MS = env_int("MESH_LIVE_INTEREST_MS", 1000, minimum=10)
# Live topic messages held for a topic consumer without credit; older ones are dropped.
MESH_LIVE_TOPIC_BUFFER = env_int("MESH_LIVE_TOPIC_BUFFER", 100, minimum=0)
MESH_WS_ALLOWED_ORIGINS = env_str("MESH_WS_ALLOWED_ORIGINS", "")

# The JSON protocol (/ws/v1/).
# The largest text frame a JSON client may send: room for a body at MESH_MAX_MESSAGE_SIZE in
# base64 and the frame around it. uvicorn is started with a WebSocket message limit of at
# least this (meshrun); a larger frame closes the socket with 1009.
MESH_WS_MAX_FRAME = env_int("MESH_WS_MAX_FRAME", MESH_MAX_MESSAGE_SIZE * 4 // 3 + 64 * 1024, minimum=1024)
# Seconds a WebSocket ticket (POST /api/v1/ws-tickets) may wait before it is used; it is
# good for one connection.
MESH_WS_TICKET_SECONDS = env_int("MESH_WS_TICKET_SECONDS", 30, minimum=1)
# Subscriptions (queues and topics) one JSON connection may hold at once.
MESH_WS_MAX_SUBSCRIPTIONS = env_int("MESH_WS_MAX_SUBSCRIPTIONS", 100, minimum=1)
# The most credit a JSON queue subscription may hold (messages sent but not yet asked for).
MESH_WS_MAX_CREDIT = env_int("MESH_WS_MAX_CREDIT", 1000, minimum=1)
# Publishes of one JSON connection checked or waiting for their commit; beyond, refused (429).
MESH_WS_MAX_PENDING_PUBLISHES = env_int("MESH_WS_MAX_PENDING_PUBLISHES", 1000, minimum=1)
# Frames waiting to be written to a slow JSON client beyond which its live topic messages
# are dropped (queue messages are never dropped: credit bounds them).
MESH_WS_MAX_BACKLOG = env_int("MESH_WS_MAX_BACKLOG", 1000, minimum=1)
