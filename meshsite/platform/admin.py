"""The platform's admin, and the base every meshsite ModelAdmin that writes builds on.

The admin writes only through the services (or offers nothing): a subaccount is the one the
settings name and is read-only, instances are created by the CLI or the cockpit (they need a
descriptor and a key shown once), entitlements change through `entitlement_put`, and deletes
go through `instance_delete` and `service_key_delete`; memberships (cockpit roles) through
`membership_put` and `membership_delete`.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from meshsite.errors import MeshError

from .models import Entitlement, Membership, ServiceInstance, ServiceKey, Subaccount
from .services import (
    PlatformError,
    entitlement_delete,
    entitlement_put,
    instance_delete,
    membership_delete,
    membership_put,
    service_key_delete,
)

REFUSALS: tuple[type[Exception], ...] = (MeshError, PlatformError)
_REFUSAL = "_mesh_service_refusal"


def _refusing(form_class: type[forms.ModelForm], message: str) -> type[forms.ModelForm]:
    class Refused(form_class):  # type: ignore[valid-type, misc]
        def clean(self) -> dict[str, Any]:
            super().clean()
            raise ValidationError(message)

    return Refused


class ServiceWritesAdmin(admin.ModelAdmin):
    """A ModelAdmin whose save_model / save_formset / delete_model call services.

    A service refuses by raising. Django runs an admin save in one transaction, so the
    refusal has rolled back every write of that save (a queue and its inline subscriptions
    together); the form is then shown again, bound to the same POST, with the service's own
    words as its error, and nothing is stored.
    """

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except REFUSALS as error:
            setattr(request, _REFUSAL, str(error))
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        refusal = getattr(request, _REFUSAL, None)
        return form if refusal is None else _refusing(form, refusal)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None) -> Any:
        try:
            return super().delete_view(request, object_id, extra_context)
        except REFUSALS as error:
            self.message_user(request, str(error), level=messages.ERROR)
            return HttpResponseRedirect(request.path.rsplit("/delete/", 1)[0] + "/change/")

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        # The service decides what goes with the row (a queue's messages, a webhook's log),
        # as it does for the API; the admin must not ask for delete rights on rows it never
        # lets anyone delete one by one.
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        self.service_delete(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for obj in queryset:
            try:
                self.service_delete(obj)
            except REFUSALS as error:
                self.message_user(request, f"{obj}: {error}", level=messages.ERROR)

    def service_delete(self, obj: Any) -> None:
        raise NotImplementedError


def adopt(obj: Model, stored: Model) -> None:
    """Make the admin's unsaved object the row the service wrote, so the inlines, the
    change message and the redirect all refer to it."""
    obj.pk = stored.pk
    obj.refresh_from_db()


class EntitlementInline(admin.TabularInline):
    model = Entitlement
    extra = 0
    fields = readonly_fields = ("service", "plan", "quota")
    can_delete = False
    show_change_link = True  # quotas change on the entitlement's own page, through the service

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """View only: no add, change or delete, whatever the user's permissions."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Subaccount)
class SubaccountAdmin(ReadOnlyAdmin):
    """Read-only: meshsite runs one subaccount, the one MESH_SUBACCOUNT names (renaming it
    would make the platform create a fresh one and orphan every instance)."""

    list_display = ["name", "created_at"]
    search_fields = ["name"]
    readonly_fields = ["name", "created_at"]
    inlines = [EntitlementInline]


@admin.register(Entitlement)
class EntitlementAdmin(ServiceWritesAdmin):
    list_display = ["subaccount", "service", "plan", "quota"]
    list_filter = ["service", "plan"]
    search_fields = ["subaccount__name", "plan"]
    fields = ["subaccount", "service", "plan", "quota"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["subaccount", "service", "plan"] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Entitlement, form: Any, change: bool) -> None:
        entitlement, created = entitlement_put(
            subaccount=obj.subaccount, service=obj.service, plan=obj.plan, quota=obj.quota
        )
        if created == change:
            raise PlatformError(f"Entitlement {obj.service}/{obj.plan} was changed meanwhile; reload and retry")
        adopt(obj, entitlement)

    def service_delete(self, obj: Entitlement) -> None:
        entitlement_delete(entitlement=obj)


class ServiceKeyInline(admin.TabularInline):
    model = ServiceKey
    extra = 0
    fields = ("name", "application", "created_at")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are created through the CLI or the cockpit, which show the secret once


@admin.register(ServiceInstance)
class ServiceInstanceAdmin(ServiceWritesAdmin):
    """View and delete only. Creating needs a descriptor and shows a key once (the CLI, the
    cockpit); the name and subaccount are fixed, since queues, subscriptions (which carry
    the subaccount) and issued tokens refer to them."""

    list_display = ["name", "service", "plan", "namespace", "subaccount", "created_at"]
    list_filter = ["service", "plan", "subaccount"]
    search_fields = ["name", "namespace"]
    readonly_fields = ["id", "subaccount", "name", "service", "plan", "namespace", "parameters", "created_at"]
    inlines = [ServiceKeyInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    # Deletes go through the services, so the admin refuses what the CLI refuses (an
    # instance that still has keys) and a key takes its OAuth2 client and tokens with it.
    def has_delete_permission(self, request: HttpRequest, obj: ServiceInstance | None = None) -> bool:
        return super().has_delete_permission(request, obj) and not (obj is not None and obj.keys.exists())

    def service_delete(self, obj: ServiceInstance) -> None:
        instance_delete(instance=obj)


@admin.register(ServiceKey)
class ServiceKeyAdmin(ServiceWritesAdmin):
    list_display = ["name", "instance", "client_id", "created_at"]
    list_filter = ["instance__service"]
    search_fields = ["name", "instance__name", "application__client_id"]
    list_select_related = ["instance", "application"]
    readonly_fields = ["instance", "name", "application", "created_at"]

    @admin.display(description="client id")
    def client_id(self, key: ServiceKey) -> str:
        return key.application.client_id

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def service_delete(self, obj: ServiceKey) -> None:
        service_key_delete(key=obj)


@admin.register(Membership)
class MembershipAdmin(ServiceWritesAdmin):
    """A user's role in a subaccount (the cockpit's Members page writes the same way)."""

    list_display = ["user", "subaccount", "role", "created_at"]
    list_filter = ["role", "subaccount"]
    search_fields = ["user__username", "subaccount__name"]
    list_select_related = ["user", "subaccount"]
    fields = ["user", "subaccount", "role"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["user", "subaccount"] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
        adopt(obj, membership_put(subaccount=obj.subaccount, user_id=obj.user_id, role=obj.role))

    def service_delete(self, obj: Membership) -> None:
        membership_delete(membership=obj)
