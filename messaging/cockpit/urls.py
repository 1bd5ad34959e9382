from django.urls import URLPattern, URLResolver, include, path

from . import views
from .connectors import views as oc

app_name = "mesh"

client = [
    path("", views.queues, name="queues"),
    path("queues/<path:name>", views.queue, name="queue"),
    path("queue-actions/<slug:action>/<path:name>", views.queue_action, name="queue-action"),
    path("topic-match", views.topic_match, name="topic-match"),
    path("webhooks/", views.webhooks, name="webhooks"),
    path("webhooks/<path:name>", views.webhook, name="webhook"),
    path("webhook-actions/<slug:action>/<path:name>", views.webhook_action, name="webhook-action"),
    path("test/", views.test, name="test"),
    path("monitor/", views.monitor, name="monitor"),
    path("monitor/rates", views.rates, name="rates"),
    path("dead-letters/<path:name>", views.dead_letters, name="dead-letters"),
    path("requeue/<path:name>", views.dead_letters_requeue_view, name="requeue"),
    path("messages/<uuid:message_id>", views.message, name="message"),
    path("asyncapi.json", views.asyncapi, name="asyncapi"),
]

connector = [
    path("", oc.connector, name="oc-connector"),
    path("configuration", oc.configuration_set, name="oc-configuration"),
    path("delete", oc.connector_delete, name="oc-delete"),
    path("events/", oc.events, name="oc-events"),
    path("events/<str:notification_id>", oc.event, name="oc-event"),
    path("queued/", oc.queued, name="oc-queued"),
    path("queued/redeliver", oc.redeliver, name="oc-redeliver"),
    path("bodies/", oc.bodies, name="oc-bodies"),
    path("polls/", oc.polls, name="oc-polls"),
]

connectors: list[URLPattern | URLResolver] = [
    path("", oc.instances, name="oc-instances"),
    path("connectors/<int:pk>/", include(connector)),
    path("formulas/", oc.formulas, name="oc-formulas"),
    path("formulas/<int:formula_id>", oc.formula, name="oc-formula"),
]

urlpatterns = [
    path("subaccounts/<int:subaccount_id>/event-mesh/", views.app_home, name="app"),
    path("subaccounts/<int:subaccount_id>/event-mesh/<uuid:instance_id>/", include(client)),
    path("subaccounts/<int:subaccount_id>/open-connectors/", oc.app_home, name="oc-app"),
    path("subaccounts/<int:subaccount_id>/open-connectors/<uuid:instance_id>/", include(connectors)),
]
