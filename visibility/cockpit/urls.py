"""The Process Visibility application's pages. Each part has its module: scenarios (modelling
and monitoring), acquisition (the Event Acquisition monitor), workspace (dashboards)."""

from django.urls import include, path

from . import views

app_name = "pv"

instance: list = [
    path("", include("visibility.cockpit.scenarios")),
    path("acquisition/", include("visibility.cockpit.acquisition")),
    path("workspace/", include("visibility.cockpit.workspace")),
]

urlpatterns = [
    path("subaccounts/<int:subaccount_id>/process-visibility/", views.app_home, name="app"),
    path("subaccounts/<int:subaccount_id>/process-visibility/<uuid:instance_id>/", include(instance)),
]
