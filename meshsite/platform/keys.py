"""Service keys rendered the way SAP clients read them: the key JSON and VCAP_SERVICES."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from .models import Service, ServiceKey
from .registry import CREDENTIAL_RENDERERS

MASK = "********"
VCAP_LABELS: dict[str, str] = {Service.EVENT_MESH: "enterprise-messaging"}


def _oa2(key: ServiceKey, secret: str | None) -> dict[str, str]:
    return {
        "clientid": key.application.client_id,
        "clientsecret": secret if secret is not None else MASK,
        "tokenendpoint": f"{settings.MESH_PUBLIC_URL}/oauth/token",
        "granttype": "client_credentials",
    }


def _websocket_url() -> str:
    parts = urlsplit(settings.MESH_PUBLIC_URL)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path}/protocols/amqp10ws"


def credentials(key: ServiceKey, *, secret: str | None = None) -> dict[str, Any]:
    """The key JSON; with `secret=None` the client secret is masked."""
    instance = key.instance
    oa2 = _oa2(key, secret)
    renderer = CREDENTIAL_RENDERERS.get(instance.service)
    if renderer is not None:
        return renderer(key, oa2)
    base = settings.MESH_PUBLIC_URL
    return {
        "xsappname": instance.xsappname,
        "namespace": instance.namespace,
        "serviceinstanceid": str(instance.id),
        "management": [{"oa2": oa2, "uri": base}],
        "messaging": [
            {"protocol": ["amqp10ws"], "broker": {"type": "sapmgw"}, "oa2": oa2, "uri": _websocket_url()},
            {"protocol": ["httprest"], "broker": {"type": "saprestmgw"}, "oa2": oa2, "uri": base},
        ],
    }


def vcap_services(key: ServiceKey, *, secret: str | None = None) -> dict[str, Any]:
    instance = key.instance
    label = VCAP_LABELS.get(instance.service, instance.service)
    return {
        label: [
            {
                "label": label,
                "plan": instance.plan,
                "name": instance.name,
                "instance_name": instance.name,
                "tags": ["enterprise-messaging"] if label == "enterprise-messaging" else [],
                "credentials": credentials(key, secret=secret),
            }
        ]
    }
