from django.core.management.base import BaseCommand, CommandError, CommandParser

from meshsite import jsonlimit

from ...services import PlatformError, instance_create, subaccount_default
from ..cli import emit


class Command(BaseCommand):
    help = "Create a service instance: create_service event-mesh default NAME -c '<descriptor json>'"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("service")
        parser.add_argument("plan")
        parser.add_argument("name")
        parser.add_argument("-c", dest="parameters", default=None, help="Parameters as JSON")

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        try:
            parameters = jsonlimit.loads(options["parameters"]) if options["parameters"] else None
        except ValueError as error:
            raise CommandError(f"-c is not valid JSON: {error}") from None
        try:
            instance = instance_create(
                subaccount=subaccount_default(), service=options["service"], plan=options["plan"],
                name=options["name"], parameters=parameters,
            )
        except PlatformError as error:
            raise CommandError(str(error)) from None
        emit(self, {"name": instance.name, "guid": str(instance.id), "service": instance.service,
                    "plan": instance.plan, "parameters": instance.parameters})
