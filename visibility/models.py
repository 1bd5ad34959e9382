"""Process Visibility: events, scenarios and process instances (see
shared/contracts/process-visibility.md). Built on the platform's instances and keys."""
