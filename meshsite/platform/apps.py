from django.apps import AppConfig


class PlatformConfig(AppConfig):
    name = "meshsite.platform"
    label = "platform"
    verbose_name = "Platform (subaccount, entitlements, instances, keys)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import schema  # noqa: F401  (registers the OpenAPI security scheme)
