from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = "Event Mesh messaging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from meshsite.platform.models import Service
        from meshsite.platform.registry import (
            register_credentials,
            register_parameter_template,
            register_parameters,
            register_subscription_app,
        )

        from . import topology
        from .connectors import keys as connector_keys
        from .descriptor import descriptor_template, normalize_descriptor

        register_parameters(Service.EVENT_MESH, "default", normalize_descriptor)
        register_parameter_template(Service.EVENT_MESH, "default", descriptor_template)
        register_subscription_app(Service.EVENT_MESH, "standard", "mesh:app")
        register_subscription_app(Service.OPEN_CONNECTORS, "standard", "mesh:oc-app")
        register_credentials(Service.OPEN_CONNECTORS, connector_keys.credentials)
        topology.connect()
