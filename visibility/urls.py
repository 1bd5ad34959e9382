"""Process Visibility's APIs: the Data Acquisition API (`/public/v1/events`) and the JSON
APIs under `/api/v1/pv/` (scenarios, processing, instances, indicator values)."""

from django.urls import include, path

from .api import events

urlpatterns: list = [
    path("public/v1/events", events.events, name="pv-events"),
    path("api/v1/pv/", include("visibility.api.scenarios")),
    path("api/v1/pv/scenarios/<slug:scenario_id>/", include("visibility.api.workspace")),
]
