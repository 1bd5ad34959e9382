from django.core.management.base import BaseCommand

from ...models import ServiceInstance
from ...services import subaccount_default
from ..cli import emit


class Command(BaseCommand):
    help = "List the subaccount's service instances"

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        instances = (
            ServiceInstance.objects.filter(subaccount=subaccount_default())
            .prefetch_related("keys")
            .order_by("name")
        )
        emit(self, [
            {"name": i.name, "guid": str(i.id), "service": i.service, "plan": i.plan,
             "namespace": i.namespace, "keys": sorted(k.name for k in i.keys.all())}
            for i in instances
        ])
