from django.apps import AppConfig


class VisibilityConfig(AppConfig):
    name = "visibility"
    verbose_name = "Process Visibility"
    default_auto_field = "django.db.models.BigAutoField"
