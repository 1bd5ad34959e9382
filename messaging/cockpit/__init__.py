"""The Event Mesh application of the cockpit: per message client (an `event-mesh/default`
instance) its queues, topic subscriptions, webhooks, a live Test tab and a Monitor. Opened
from the subaccount's `event-mesh/standard` subscription; gated by meshsite.cockpit.access
like every cockpit page."""
