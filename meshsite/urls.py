from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.templatetags.static import static
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from meshsite.platform.views import TokenView

handler404 = "meshsite.errors.handler404"
handler500 = "meshsite.errors.handler500"


def favicon(request: HttpRequest) -> HttpResponseRedirect:
    # Browsers ask for /favicon.ico on every site; send them to the hashed static file, which
    # whitenoise serves with a year-long cache. Temporary (302), so a new icon's new hash is
    # picked up, but cached for a day so the redirect itself is not asked for on every page.
    response = HttpResponseRedirect(static("favicon.ico"))
    response["Cache-Control"] = "public, max-age=86400"
    return response


urlpatterns = [
    path("oauth/token", TokenView.as_view(), name="oauth-token"),
    path("favicon.ico", favicon, name="favicon"),
    path("metrics", include("messaging.metrics.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[]), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[]), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema", permission_classes=[],
                                                    template_name="api/redoc.html"), name="api-redoc"),
    path("", include("messaging.urls")),
    path("", include("visibility.urls")),
    path("", include("visibility.cockpit.urls")),
    path("", include("messaging.cockpit.urls")),
    path("", include("meshsite.cockpit.urls")),
]
