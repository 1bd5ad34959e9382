"""Connector events (the Open Connectors events framework).

Pure foundation: element (provider) definitions as data (elements.py), normalization of a
provider's body (normalize.py), notification pages and their signature (notifications.py),
poller date macros (macros.py). On it: connector instances and their configuration
(instances.py), providers' webhooks stored then normalized (intake.py), polling (polling.py),
the one notification path (emit.py) into delivery through the Event Mesh webhook engine
(delivery.py, queued.py) and onto mesh topics, the event log's reads (selectors.py), and
event-triggered formulas (formulas/). docs/connectors.md describes it for users.
"""
