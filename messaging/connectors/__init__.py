"""Connector events (Open Connectors' events framework): connector instances, provider
definitions, normalized notifications. Being built; so far the service's keys."""
