"""AMQP 1.0 over WebSocket (`/protocols/amqp10ws`), the protocol SAP's clients speak.

    consumer    the Channels consumer: the upgrade's checks, bytes in and out
    connection  one connection: the engine's events, tasks, settlement, housekeeping
    engine      python-qpid-proton's protocol engine in server mode
    links       the client's sender links (publish) and receiver links (queue, topic)
    codec       AMQP messages to and from stored rows
    conditions  refusals as AMQP error conditions
"""
