from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = "Event Mesh messaging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from meshsite.platform.models import Service
        from meshsite.platform.registry import register_parameters

        from . import topology
        from .descriptor import normalize_descriptor

        register_parameters(Service.EVENT_MESH, "default", normalize_descriptor)
        topology.connect()
