"""Connector events (the Open Connectors events framework), being built.

So far: the open-connectors service key (keys.py) and the pure foundation — element
(provider) definitions as data, the normalization of a provider's webhook body into event
objects, the pagination of event objects into notification bodies with their signature, and
the expansion of poller URL date macros. Callers supply clocks, ids and keys. Connector
instances and their API, polling, delivery with retries and the event log, and
event-triggered formulas are to come and build on these modules.
"""
