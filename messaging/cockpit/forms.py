"""Forms of the Event Mesh application: shapes only; names, rules and limits are checked by
the services the management API calls, whose refusals the views put beside the field."""

from __future__ import annotations

from typing import Any

from django import forms

from ..models import AccessType
from ..services import QueueAttributes
from ..services.webhooks import WebhookSpec

NUMBERS = (
    ("max_queue_size_in_bytes", "Max queue size (bytes, 0 = no limit)"),
    ("max_queue_message_count", "Max message count (0 = no limit)"),
    ("max_message_size_in_bytes", "Max message size (bytes, 0 = the server's limit)"),
    ("max_redelivery_count", "Max redelivery count (0 = unlimited)"),
    ("max_delivered_unacked_msgs_per_flow", "Max unacknowledged messages per consumer"),
    ("redelivery_delay_in_ms", "Redelivery delay (ms)"),
    ("max_redelivery_delay_in_ms", "Max redelivery delay (ms)"),
)


class QueueForm(forms.Form):
    name = forms.CharField(max_length=255, help_text="e.g. a/b/c/orders (the namespace first)")
    access_type = forms.ChoiceField(choices=AccessType.choices, required=False)
    respect_ttl = forms.BooleanField(required=False, label="Respect message TTL")
    dead_msg_queue = forms.CharField(max_length=255, required=False, label="Dead message queue")

    def __init__(self, *args: Any, fixed_name: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, label in NUMBERS:
            self.fields[name] = forms.IntegerField(min_value=0, required=False, label=label)
        if fixed_name:
            self.fields["name"].disabled = True

    def attributes(self) -> QueueAttributes:
        data = self.cleaned_data
        dead = (data.get("dead_msg_queue") or "").strip()
        return QueueAttributes(
            access_type=data.get("access_type") or None, respect_ttl=data.get("respect_ttl", False),
            dead_msg_queue=dead or None, clear_dead_msg_queue=not dead and self.fields["name"].disabled,
            **{name: data.get(name) for name, _ in NUMBERS},
        )


def queue_initial(queue: Any) -> dict[str, Any]:
    return {
        "name": queue.name, "access_type": queue.access_type, "respect_ttl": queue.respect_ttl,
        "dead_msg_queue": queue.dead_msg_queue or "", **{name: getattr(queue, name) for name, _ in NUMBERS},
    }


class SubscriptionForm(forms.Form):
    pattern = forms.CharField(max_length=255, label="Topic pattern", help_text="+ matches one level, * the rest")


AUTH = (("", "None"), ("basicAuth", "Basic authentication"), ("oauth2", "OAuth 2.0 client credentials"))


class WebhookForm(forms.Form):
    name = forms.CharField(max_length=255)
    queue = forms.ChoiceField()
    endpoint = forms.URLField(max_length=2048, assume_scheme="https", label="Webhook URL")
    qos = forms.TypedChoiceField(choices=((1, "1 — at least once"), (0, "0 — at most once")), coerce=int, initial=1)
    exempt_handshake = forms.BooleanField(required=False, label="Exempt from the handshake")
    default_content_type = forms.CharField(max_length=255, required=False)
    auth = forms.ChoiceField(choices=AUTH, required=False, label="Authentication")
    user = forms.CharField(max_length=255, required=False)
    password = forms.CharField(max_length=255, required=False, widget=forms.PasswordInput)
    client_id = forms.CharField(max_length=255, required=False, label="Client id")
    client_secret = forms.CharField(max_length=255, required=False, widget=forms.PasswordInput)
    token_url = forms.URLField(max_length=2048, required=False, assume_scheme="https", label="Token URL")

    def __init__(self, *args: Any, queues: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["queue"].choices = [(name, name) for name in queues]  # type: ignore[attr-defined]

    def spec(self) -> WebhookSpec:
        data = self.cleaned_data
        return WebhookSpec(
            name=data["name"], queue_name=data["queue"], qos=data["qos"], endpoint=data["endpoint"],
            exempt_handshake=data["exempt_handshake"], default_content_type=data["default_content_type"],
            security=self._security(),
        )

    def _security(self) -> dict[str, str]:
        data = self.cleaned_data
        if data["auth"] == "basicAuth":
            return {"type": "basicAuth", "user": data["user"], "password": data["password"]}
        if data["auth"] == "oauth2":
            return {"type": "oauth2", "grantType": "client_credentials", "clientId": data["client_id"],
                    "clientSecret": data["client_secret"], "tokenUrl": data["token_url"]}
        return {}
