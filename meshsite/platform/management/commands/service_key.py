from django.core.management.base import BaseCommand, CommandParser

from ...keys import credentials, vcap_services
from ..cli import emit, key_named


class Command(BaseCommand):
    help = "Print a service key (the client secret masked: only its hash is stored)"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("instance")
        parser.add_argument("key")
        parser.add_argument("--vcap", action="store_true", help="Print the VCAP_SERVICES form")

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        key = key_named(options["instance"], options["key"])
        emit(self, (vcap_services if options["vcap"] else credentials)(key))
