from django.urls import include, path

from . import views

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

urlpatterns = [
    path("subaccounts/<int:subaccount_id>/event-mesh/", views.app_home, name="app"),
    path("subaccounts/<int:subaccount_id>/event-mesh/<uuid:instance_id>/", include(client)),
]
