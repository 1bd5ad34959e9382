from django.apps import AppConfig


class VisibilityConfig(AppConfig):
    name = "visibility"
    verbose_name = "Process Visibility"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import meshsite.lookups  # noqa: F401 -- registers field__any, which processing's batches use
        from meshsite.platform.models import Service
        from meshsite.platform.registry import (
            register_credentials,
            register_key_parameters,
            register_subscription_app,
        )

        from . import keys

        register_key_parameters(Service.PROCESS_VISIBILITY, keys.key_parameters, keys.key_roles_apply)
        register_credentials(Service.PROCESS_VISIBILITY, keys.credentials)
        register_subscription_app(Service.PROCESS_VISIBILITY, "standard", "pv:app")
