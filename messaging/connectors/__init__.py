"""Connector events (the Open Connectors events framework): the pure foundation.

What is here is pure code: element (provider) definitions as data, the normalization of a
provider's webhook body into event objects, the pagination of event objects into
notification bodies with their signature, and the expansion of poller URL date macros.
Callers supply clocks, ids and keys. The rest of the contract — connector instances and
their API, polling, delivery with retries and the event log, event-triggered formulas — is
to come and will build on these modules.
"""
