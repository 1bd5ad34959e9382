"""Forms of the Open Connectors pages: shapes only. Every rule on names, elements and
configuration keys is the services' (messaging.connectors.instances); their refusals are put
beside the field they name."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from meshsite.platform.models import Service, ServiceInstance

from ...connectors.elements import ELEMENTS
from ...connectors.instances import KEYS

# What the configuration box starts with: every key of the contract, for webhooks.
EXAMPLE = {
    "event.notification.enabled": True,
    "event.vendor.type": "webhook",
    "event.notification.callback.url": "https://example.com/callback",
    "event.notification.signature.key": "",
    "event.vendor.secret": "",
}


def _json_object(raw: str, label: str) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise forms.ValidationError(f"{label} is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise forms.ValidationError(f"{label} must be a JSON object")
    return value


class ConnectorForm(forms.Form):
    name = forms.CharField(max_length=200)
    element = forms.ChoiceField(choices=sorted((key, f"{e.name} ({key})") for key, e in ELEMENTS.items()))
    event_mesh = forms.ChoiceField(required=False, label="Event Mesh instance")
    topic_prefix = forms.CharField(max_length=150, required=False, help_text="events go to <namespace>/<prefix>/…")
    provider_account = forms.CharField(max_length=200, required=False,
                                       help_text="the account a provider's webhook body names")
    configuration = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8}), required=False,
        help_text="JSON; on an existing instance it is merged into the stored configuration key by key")

    def __init__(self, *args: Any, event_meshes: list[ServiceInstance], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meshes = {str(mesh.pk): mesh for mesh in event_meshes}
        self.fields["event_mesh"].choices = [  # type: ignore[attr-defined]
            ("", "None"), *((str(mesh.pk), f"{mesh.name} ({mesh.namespace})") for mesh in event_meshes)]

    def clean_configuration(self) -> dict[str, Any]:
        return _json_object(self.cleaned_data["configuration"], "The configuration")

    def bound_event_mesh(self) -> ServiceInstance | None:
        return self.meshes.get(self.cleaned_data.get("event_mesh") or "")

    def fields_for_service(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {"name": data["name"], "element_key": data["element"], "configuration": data["configuration"],
                "event_mesh": self.bound_event_mesh(), "topic_prefix": data["topic_prefix"],
                "provider_account": data["provider_account"]}


def event_meshes_of(owner: ServiceInstance) -> list[ServiceInstance]:
    """The Event Mesh message clients a connector instance of `owner` may publish to."""
    return list(ServiceInstance.objects.filter(subaccount_id=owner.subaccount_id, service=Service.EVENT_MESH,
                                               plan="default").order_by("name"))


class ConfigurationKeyForm(forms.Form):
    key = forms.ChoiceField(choices=[(key, key) for key in KEYS])
    value = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False,
                            help_text="JSON (true, 5, {…}); anything else is taken as text")

    def clean_value(self) -> Any:
        raw: str = self.cleaned_data["value"]
        try:
            return json.loads(raw)
        except ValueError:
            return raw


class DeleteForm(forms.Form):
    confirm = forms.CharField(max_length=200, label="Type the connector instance's name to confirm")
