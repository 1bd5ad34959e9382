from celery import shared_task
from oauth2_provider.models import clear_expired

from .services import access_tokens_expired_delete


@shared_task
def clear_expired_tokens() -> None:
    access_tokens_expired_delete()  # the bulk of the rows, in short batches
    clear_expired()
