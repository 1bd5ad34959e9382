"""Reads of the platform pages, one grouped query each where a loop would do."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count

from meshsite.platform.models import Entitlement, Membership, ServiceInstance, Subaccount


@dataclass(frozen=True)
class EntitlementUse:
    entitlement: Entitlement
    used: int

    @property
    def free(self) -> int:
        return max(self.entitlement.quota - self.used, 0)


def entitlements_used(*, subaccount: Subaccount) -> list[EntitlementUse]:
    used = {
        (row["service"], row["plan"]): row["n"]
        for row in ServiceInstance.objects.filter(subaccount=subaccount)
        .values("service", "plan").annotate(n=Count("id"))
    }
    return [
        EntitlementUse(entitlement, used.get((entitlement.service, entitlement.plan), 0))
        for entitlement in subaccount.entitlements.order_by("service", "plan")
    ]


def instances_with_key_counts(*, subaccount: Subaccount) -> list[ServiceInstance]:
    return list(subaccount.instances.annotate(key_count=Count("keys")).order_by("service", "plan", "name"))


def members_of(*, subaccount: Subaccount) -> list[Membership]:
    return list(subaccount.memberships.select_related("user").order_by("user__username"))
