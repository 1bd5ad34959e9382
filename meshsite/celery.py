import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshsite.settings")

app = Celery("meshsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["messaging", "meshsite.platform"])
