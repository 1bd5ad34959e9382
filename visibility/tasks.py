"""Process Visibility's Celery tasks: thin, they load rows and call the processing service."""

from __future__ import annotations

from celery import shared_task

from meshsite.platform.models import Service, ServiceInstance

from .models import RunTrigger
from .services.processing import instance_process, processing_scheduled


@shared_task(name="visibility.tasks.process_all")
def process_all() -> int:
    return processing_scheduled()


@shared_task(name="visibility.tasks.process_instance")
def process_instance(instance_id: str, trigger: str = RunTrigger.MANUAL) -> int:
    instance = ServiceInstance.objects.filter(pk=instance_id, service=Service.PROCESS_VISIBILITY).first()
    if instance is None:  # deleted meanwhile
        return 0
    return len(instance_process(instance=instance, trigger=trigger))
