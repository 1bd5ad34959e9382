from django.core.management.base import BaseCommand, CommandParser

from ...services import service_key_delete
from ..cli import emit, key_named


class Command(BaseCommand):
    help = "Delete a service key; its tokens stop working at once"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("instance")
        parser.add_argument("key")

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        service_key_delete(key=key_named(options["instance"], options["key"]))
        emit(self, {"deleted": {"instance": options["instance"], "key": options["key"]}})
