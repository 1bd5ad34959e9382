"""ASGI entry point: HTTP through the header and body-size guards into the messaging hot path
(publish, consume, acknowledge) or Django, WebSocket
through the origin check into the protocol routes: AMQP 1.0 (and the JSON protocol)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshsite.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from meshsite import daphnelimits  # noqa: E402
from meshsite.apihandler import ApiASGIHandler, is_api_path  # noqa: E402
from meshsite.bodylimit import BodyLimitMiddleware  # noqa: E402
from meshsite.headerlimit import HeaderLimitMiddleware  # noqa: E402
from meshsite.platform.ratelimit import TokenFloodGuard  # noqa: E402
from meshsite.platform.tokenpath import TokenFastPath  # noqa: E402
from meshsite.wsorigin import OriginGuard  # noqa: E402
from messaging.hotpath import HotPath  # noqa: E402

api_asgi_app = ApiASGIHandler()
daphnelimits.install()


async def http_app(scope, receive, send):  # type: ignore[no-untyped-def]
    app = api_asgi_app if is_api_path(scope["path"]) else django_asgi_app
    await app(scope, receive, send)


from django.urls import path  # noqa: E402

from messaging.amqp.consumer import AmqpConsumer  # noqa: E402
from messaging.jsonws.consumer import JsonConsumer  # noqa: E402

websocket_routes: list = [
    path("protocols/amqp10ws", AmqpConsumer.as_asgi()),
    path("ws/v1/", JsonConsumer.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": HeaderLimitMiddleware(
            BodyLimitMiddleware(
                TokenFloodGuard(TokenFastPath(HotPath(http_app))), limit=settings.MESH_MAX_REQUEST_BODY
            )
        ),
        "websocket": OriginGuard(URLRouter(websocket_routes)),
    }
)
