from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...services import PlatformError, instance_delete
from ..cli import emit, instance_named


class Command(BaseCommand):
    help = "Delete a service instance (its keys must be deleted first), with its queues and messages"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("instance")

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        try:
            instance_delete(instance=instance_named(options["instance"]))
        except PlatformError as error:
            raise CommandError(str(error)) from None
        emit(self, {"deleted": {"instance": options["instance"]}})
