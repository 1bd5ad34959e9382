"""The Process Visibility application's pages. Each part has its module: scenarios (modelling
and monitoring), acquisition (the Event Acquisition monitor), workspace (dashboards)."""

from django.urls import include, path

from . import views

app_name = "pv"

instance: list = [
    path("acquisition/", include("visibility.cockpit.acquisition")),
]

urlpatterns = [
    path("subaccounts/<int:subaccount_id>/process-visibility/", views.app_home, name="app"),
    path("subaccounts/<int:subaccount_id>/process-visibility/<uuid:instance_id>/", include(instance)),
]
