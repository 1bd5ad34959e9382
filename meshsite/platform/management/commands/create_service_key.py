from django.core.management.base import BaseCommand, CommandError, CommandParser

from meshsite import jsonlimit

from ...keys import credentials, vcap_services
from ...services import PlatformError, service_key_create
from ..cli import emit, instance_named


class Command(BaseCommand):
    help = "Create a service key and print it, secret included (it is not shown again)"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("instance")
        parser.add_argument("key")
        parser.add_argument("-c", dest="parameters", default=None,
                            help='Parameters as JSON, e.g. \'{"roles": ["PVEventSender"]}\'')
        parser.add_argument("--vcap", action="store_true", help="Print the VCAP_SERVICES form")

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        instance = instance_named(options["instance"])
        try:
            parameters = jsonlimit.loads(options["parameters"]) if options["parameters"] else None
        except ValueError as error:
            raise CommandError(f"-c is not valid JSON: {error}") from None
        try:
            new = service_key_create(instance=instance, name=options["key"], parameters=parameters)
        except PlatformError as error:
            raise CommandError(str(error)) from None
        render = vcap_services if options["vcap"] else credentials
        emit(self, render(new.key, secret=new.client_secret))
