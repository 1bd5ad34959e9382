from django.contrib import admin

from .models import Entitlement, ServiceInstance, ServiceKey, Subaccount


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
