"""Per-service hooks the platform calls without importing the services' apps.

`messaging` registers the Event Mesh descriptor validator here in its AppConfig.ready(), so
the dependency points from the service apps to the platform and never back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# (raw parameters, instance name) -> normalized parameters; raises ValueError with a
# message fit for the user.
ParameterValidator = Callable[[Any, str], dict[str, Any]]

PARAMETER_VALIDATORS: dict[tuple[str, str], ParameterValidator] = {}


def register_parameters(service: str, plan: str, validator: ParameterValidator) -> None:
    PARAMETER_VALIDATORS[(service, plan)] = validator
