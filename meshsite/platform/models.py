"""The platform a service runs in, as in SAP BTP: a subaccount with entitlements, service
instances created under them, and service keys (OAuth2 clients) bound to one instance."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models


class Service(models.TextChoices):
    EVENT_MESH = "event-mesh", "Event Mesh"
    PROCESS_VISIBILITY = "process-visibility", "Process Visibility"
    OPEN_CONNECTORS = "open-connectors", "Open Connectors"


class Subaccount(models.Model):
    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Entitlement(models.Model):
    """A service plan the subaccount may use, and how many instances of it."""

    subaccount = models.ForeignKey(Subaccount, on_delete=models.CASCADE, related_name="entitlements")
    service = models.CharField(max_length=40, choices=Service.choices)
    plan = models.CharField(max_length=40)
    quota = models.PositiveIntegerField(default=1, help_text="Instances allowed; 0 = none")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subaccount", "service", "plan"], name="entitlement_unique_plan"),
            # PositiveIntegerField's own column check is backend-specific; this one is named and everywhere.
            models.CheckConstraint(condition=models.Q(quota__gte=0), name="entitlement_quota_not_negative"),
            models.CheckConstraint(condition=models.Q(service__in=Service.values), name="entitlement_service_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.service}/{self.plan} ×{self.quota}"


class ServiceInstance(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subaccount = models.ForeignKey(Subaccount, on_delete=models.PROTECT, related_name="instances")
    service = models.CharField(max_length=40, choices=Service.choices)
    plan = models.CharField(max_length=40)
    name = models.CharField(max_length=100)
    parameters = models.JSONField(default=dict, blank=True)
    # Denormalized from the Event Mesh descriptor: unique per subaccount, and looked up on
    # every fan-out, so it gets a column rather than a JSON path.
    namespace = models.CharField(max_length=24, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subaccount", "name"], name="instance_unique_name"),
            models.UniqueConstraint(
                fields=["subaccount", "namespace"],
                condition=~models.Q(namespace=""),
                name="instance_unique_namespace",
            ),
            models.CheckConstraint(condition=models.Q(service__in=Service.values), name="instance_service_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.service}/{self.plan})"

    def option_enabled(self, option: str) -> bool:
        options: dict[str, Any] = self.parameters.get("options", {})
        return bool(options.get(option, True))

    @property
    def xsappname(self) -> str:
        return f"{self.name}!i{self.id.hex[:8]}"


class ServiceKey(models.Model):
    instance = models.ForeignKey(ServiceInstance, on_delete=models.CASCADE, related_name="keys")
    name = models.CharField(max_length=100)
    application = models.OneToOneField(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL, on_delete=models.CASCADE, related_name="service_key"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["instance", "name"], name="key_unique_name")]

    def __str__(self) -> str:
        return f"{self.instance.name}/{self.name}"


class Role(models.TextChoices):
    ADMINISTRATOR = "administrator", "Administrator"
    VIEWER = "viewer", "Viewer"


class Membership(models.Model):
    """A user's role in one subaccount: administrators change everything in it, viewers read.

    A superuser is an administrator of every subaccount without a row here."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    subaccount = models.ForeignKey(Subaccount, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "subaccount"], name="membership_unique_user"),
            models.CheckConstraint(condition=models.Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.subaccount}: {self.role}"
