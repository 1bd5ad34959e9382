from django.contrib import admin, messages

from .models import Entitlement, ServiceInstance, ServiceKey, Subaccount
from .services import PlatformError, instance_delete, service_key_delete


class EntitlementInline(admin.TabularInline):
    model = Entitlement
    extra = 0


@admin.register(Subaccount)
class SubaccountAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    inlines = [EntitlementInline]


@admin.register(Entitlement)
class EntitlementAdmin(admin.ModelAdmin):
    list_display = ["subaccount", "service", "plan", "quota"]
    list_filter = ["service", "plan"]


class ServiceKeyInline(admin.TabularInline):
    model = ServiceKey
    extra = 0
    fields = ("name", "application", "created_at")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False  # keys are created through the CLI or the cockpit, which show the secret once


@admin.register(ServiceInstance)
class ServiceInstanceAdmin(admin.ModelAdmin):
    list_display = ["name", "service", "plan", "namespace", "subaccount", "created_at"]
    list_filter = ["service", "plan", "subaccount"]
    search_fields = ["name", "namespace"]
    readonly_fields = ["id", "service", "plan", "namespace", "parameters", "created_at"]
    inlines = [ServiceKeyInline]

    # Deletes go through the services, so the admin refuses what the CLI refuses (an
    # instance that still has keys) and a key takes its OAuth2 client and tokens with it.
    def has_delete_permission(self, request, obj: ServiceInstance | None = None) -> bool:  # type: ignore[no-untyped-def]
        return super().has_delete_permission(request, obj) and not (obj is not None and obj.keys.exists())

    def delete_model(self, request, obj: ServiceInstance) -> None:  # type: ignore[no-untyped-def]
        self.delete_queryset(request, [obj])

    def delete_queryset(self, request, queryset) -> None:  # type: ignore[no-untyped-def]
        for instance in queryset:
            try:
                instance_delete(instance=instance)
            except PlatformError as error:
                self.message_user(request, str(error), level=messages.ERROR)


@admin.register(ServiceKey)
class ServiceKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "instance", "client_id", "created_at"]
    search_fields = ["name", "instance__name", "application__client_id"]
    list_select_related = ["instance", "application"]
    readonly_fields = ["instance", "name", "application", "created_at"]

    @admin.display(description="client id")
    def client_id(self, key: ServiceKey) -> str:
        return key.application.client_id

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def delete_model(self, request, obj: ServiceKey) -> None:  # type: ignore[no-untyped-def]
        service_key_delete(key=obj)

    def delete_queryset(self, request, queryset) -> None:  # type: ignore[no-untyped-def]
        for key in queryset.select_related("application"):
            service_key_delete(key=key)
