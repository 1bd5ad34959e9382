"""The cockpit's Open Connectors application: connector instances, their event log, queued
notifications, providers' bodies, polls and formulas. Reads through
messaging.connectors.selectors (and this package's selectors for the cockpit's own groupings),
writes through messaging.connectors' services."""
