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


# (service, plan) -> the URL name of the application a subscription of that plan opens; the
# cockpit links to it without importing the app (messaging registers the Event Mesh app).
SUBSCRIPTION_APPS: dict[tuple[str, str], str] = {}

# (service, plan) -> a starting point for the parameters editor, given the instance name.
PARAMETER_TEMPLATES: dict[tuple[str, str], Callable[[str], dict[str, Any]]] = {}


def register_subscription_app(service: str, plan: str, url_name: str) -> None:
    SUBSCRIPTION_APPS[(service, plan)] = url_name


def register_parameter_template(service: str, plan: str, template: Callable[[str], dict[str, Any]]) -> None:
    PARAMETER_TEMPLATES[(service, plan)] = template


# service -> (raw key parameters) -> normalized ones, raising ValueError with a message for the
# user; and the hook that applies them to a key just created, in the same transaction
# (Process Visibility grants the roles a key names). A service without one takes none.
KeyParameterValidator = Callable[[Any], dict[str, Any]]
KEY_PARAMETERS: dict[str, tuple[KeyParameterValidator, Callable[[Any, dict[str, Any]], None]]] = {}

# service -> (key, oa2 credentials) -> the key JSON; Event Mesh's form when none is registered.
CREDENTIAL_RENDERERS: dict[str, Callable[[Any, dict[str, str]], dict[str, Any]]] = {}


def register_key_parameters(service: str, validator: KeyParameterValidator,
                            apply: Callable[[Any, dict[str, Any]], None]) -> None:
    KEY_PARAMETERS[service] = (validator, apply)


def register_credentials(service: str, renderer: Callable[[Any, dict[str, str]], dict[str, Any]]) -> None:
    CREDENTIAL_RENDERERS[service] = renderer
