from celery import shared_task

from .services import queues_sweep


@shared_task
def sweep_queues() -> int:
    return queues_sweep()
