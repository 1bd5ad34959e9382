"""Process Visibility's service keys: the roles a key's parameters grant, and the key JSON in
the form Process Visibility clients read (`uaa` and `endpoints.events`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from meshsite.platform.models import ServiceKey

from .models import PVRole, RoleGrant
from .roles import DEFAULT_KEY_ROLES


def key_parameters(raw: Any) -> dict[str, Any]:
    """{"roles": [...]} with roles from PVEventSender, PVDeveloper, PVAdmin, PVOperator;
    without parameters a key may push events only."""
    if raw in (None, {}):
        return {"roles": list(DEFAULT_KEY_ROLES)}
    if not isinstance(raw, dict) or set(raw) - {"roles"}:
        raise ValueError('Process Visibility key parameters are {"roles": [...]}')
    roles = raw.get("roles")
    if not isinstance(roles, list) or not roles or not all(isinstance(role, str) for role in roles):
        raise ValueError(f"roles must be a non-empty list of {', '.join(PVRole.values)}")
    unknown = sorted(set(roles) - set(PVRole.values))
    if unknown:
        raise ValueError(f"Unknown role {unknown[0]!r}; one of {', '.join(PVRole.values)}")
    return {"roles": sorted(set(roles))}


def key_roles_apply(key: ServiceKey, parameters: dict[str, Any]) -> None:
    RoleGrant.objects.bulk_create(
        [RoleGrant(instance_id=key.instance_id, service_key=key, role=role) for role in parameters["roles"]]
    )


def credentials(key: ServiceKey, oa2: dict[str, str]) -> dict[str, Any]:
    base = settings.MESH_PUBLIC_URL
    return {
        "uaa": {"clientid": oa2["clientid"], "clientsecret": oa2["clientsecret"], "url": base,
                "tokenendpoint": oa2["tokenendpoint"]},
        "endpoints": {"events": f"{base}/public/v1/events"},
        "serviceinstanceid": str(key.instance_id),
    }
