from django.urls import path, re_path, register_converter

from .api import (
    asyncapi,
    connector_events,
    connector_log,
    connectors,
    formulas,
    management,
    rest,
    tickets,
    webhooks,
)
from .api.base import SegmentConverter

register_converter(SegmentConverter, "segment")

MANAGEMENT = "hub/rest/api/v1/management/messaging/"
REST = "messagingrest/v1/"
CONNECTORS = "elements/api-v2/"

urlpatterns = [
    path(f"{MANAGEMENT}queues", management.QueueListView.as_view()),
    path(f"{MANAGEMENT}queues/<segment:queue>", management.QueueView.as_view()),
    path(f"{MANAGEMENT}queues/<segment:queue>/statistics", management.QueueStatisticsView.as_view()),
    path(f"{MANAGEMENT}queues/<segment:queue>/subscriptions", management.SubscriptionListView.as_view()),
    path(f"{MANAGEMENT}queues/<segment:queue>/subscriptions/<segment:topic>", management.SubscriptionView.as_view()),
    path(f"{MANAGEMENT}queues/<segment:queue>/messages", management.QueueMessagesView.as_view()),
    path(f"{MANAGEMENT}queues/<segment:queue>/requeue", management.RequeueView.as_view()),
    path(f"{MANAGEMENT}queuesStatistics", management.QueuesStatisticsView.as_view()),
    path(f"{MANAGEMENT}readinessCheck", management.ReadinessView.as_view()),
    path(f"{REST}queues/<segment:queue>/messages", rest.QueuePublishView.as_view()),
    path(f"{REST}queues/<segment:queue>/messages/consumption", rest.ConsumeView.as_view()),
    path(f"{REST}queues/<segment:queue>/messages/<segment:message_id>/acknowledgement", rest.AcknowledgeView.as_view()),
    path(f"{REST}topics/<segment:topic>/messages", rest.TopicPublishView.as_view()),
    path("api/v1/ws-tickets", tickets.WsTicketView.as_view(), name="ws-tickets"),
    path("api/v1/asyncapi", asyncapi.AsyncApiView.as_view(), name="asyncapi"),
    path(f"{REST}subscriptions", webhooks.SubscriptionListView.as_view()),
    path(f"{REST}subscriptions/<segment:name>", webhooks.SubscriptionView.as_view()),
    path(f"{REST}subscriptions/<segment:name>/handshake", webhooks.HandshakeView.as_view()),
    path(f"{REST}subscriptions/<segment:name>/state", webhooks.StateView.as_view()),
    path(f"{REST}subscriptions/<segment:name>/deliveries", webhooks.DeliveryLogView.as_view()),
    path(f"{CONNECTORS}instances", connectors.InstanceListView.as_view()),
    path(f"{CONNECTORS}instances/<int:pk>", connectors.InstanceView.as_view()),
    path(f"{CONNECTORS}instances/<int:pk>/configuration", connectors.ConfigurationListView.as_view()),
    path(f"{CONNECTORS}instances/<int:pk>/configuration/<segment:key>", connectors.ConfigurationView.as_view()),
    path(f"{CONNECTORS}instances/<int:pk>/events", connector_log.EventListView.as_view()),
    path(f"{CONNECTORS}instances/<int:pk>/events/queued", connector_log.QueuedListView.as_view()),
    path(f"{CONNECTORS}instances/<int:pk>/events/queued/redeliver", connector_log.RedeliverView.as_view()),
    path(f"{CONNECTORS}instances/<int:pk>/events/<segment:notification_id>", connector_log.EventView.as_view()),
    path(f"{CONNECTORS}instances/<int:pk>/vendor-events", connector_log.VendorEventListView.as_view()),
    path(f"{CONNECTORS}instances/<int:pk>/polls", connector_log.PollListView.as_view()),
    # Providers post with or without the trailing slash; an instance's own URL adds its token.
    re_path(rf"^{CONNECTORS}events/(?P<element_key>[A-Za-z0-9_.-]{{1,100}})/?$", connector_events.vendor_events),
    re_path(rf"^{CONNECTORS}events/(?P<element_key>[A-Za-z0-9_.-]{{1,100}})/(?P<token>[A-Za-z0-9_-]{{1,64}})/?$",
            connector_events.vendor_events),
    path(f"{CONNECTORS}formulas", formulas.FormulaListView.as_view()),
    path(f"{CONNECTORS}formulas/<int:pk>", formulas.FormulaView.as_view()),
    path(f"{CONNECTORS}formulas/<int:pk>/instances", formulas.FormulaInstanceListView.as_view()),
    path(f"{CONNECTORS}formulas/<int:pk>/instances/<int:instance_id>", formulas.FormulaInstanceView.as_view()),
    path(f"{CONNECTORS}formulas/instances/<int:instance_id>/executions", formulas.ExecutionListView.as_view()),
    path(f"{CONNECTORS}formulas/instances/executions/<int:execution_id>", formulas.ExecutionView.as_view()),
]
