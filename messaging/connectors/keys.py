"""An `open-connectors` service key in the form connector clients read: `uaa` and the
instance API's base, `endpoints.api`."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from meshsite.platform.models import ServiceKey


def credentials(key: ServiceKey, oa2: dict[str, str]) -> dict[str, Any]:
    base = settings.MESH_PUBLIC_URL
    return {
        "uaa": {"clientid": oa2["clientid"], "clientsecret": oa2["clientsecret"], "url": base,
                "tokenendpoint": oa2["tokenendpoint"]},
        "endpoints": {"api": f"{base}/elements/api-v2"},
        "serviceinstanceid": str(key.instance_id),
    }
