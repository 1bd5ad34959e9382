from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from meshsite.platform.views import TokenView

handler404 = "meshsite.errors.handler404"
handler500 = "meshsite.errors.handler500"

urlpatterns = [
    path("oauth/token", TokenView.as_view(), name="oauth-token"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[]), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[]), name="api-docs"),
    path("", include("messaging.urls")),
]
