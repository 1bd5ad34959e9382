"""Process Visibility's APIs: the Data Acquisition API (`/public/v1/events`) and the JSON
APIs under `/api/v1/pv/` (scenarios, processing, instances, indicator values)."""

from django.urls import path

from .api import events

urlpatterns: list = [
    path("public/v1/events", events.events, name="pv-events"),
]
