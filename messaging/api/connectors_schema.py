"""What the OpenAPI document says about the Open Connectors APIs (`/elements/api-v2/`).

Their views build their answers by hand (the `_json`, `_entry`, `_formula`, ... helpers in
connectors.py, connector_log.py and formulas.py), so the serializers here are schema only:
each states the shape one helper returns, and messaging/tests/test_openapi_connectors.py
validates real answers against them. The views carry one class decorator each from here and
nothing else of the document.

Errors are meshsite's own `{"detail", "code", "extra"}` (meshsite/errors.py), except a body
past MESH_MAX_REQUEST_BODY: under ASGI the body-limit middleware refuses it before any view,
in SAP's `{"message"}`. The bearer token is an open-connectors service key's; its scheme is
declared by the post-processing hook in connector_events_schema.py, which also documents the
providers' webhook endpoint (connector_events.py, a plain Django view drf-spectacular cannot see).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers

from meshsite.platform.schema import MeshErrorSerializer

from ..connectors.elements import EventType
from ..connectors.formulas.definition import MAX_STEPS, PROPERTIES
from ..connectors.instances import ELEMENT_KEYS, KEYS
from ..connectors.selectors import DELIVERED, NOT_DELIVERED, PENDING, QUEUED, RETRYING
from ..models import ExecutionStatus, NotificationSource, VendorEventStatus
from .openapi import SapErrorSerializer

INSTANCES = ["Open Connectors: instances"]
EVENT_LOG = ["Open Connectors: event log"]
FORMULAS = ["Open Connectors: formulas"]
SECURITY_SCHEME = "openConnectorsToken"
# The operations' `security` as it is written out: extend_schema's `auth` is typed as names,
# but drf-spectacular puts it in the document as it is given.
AUTH: Any = [{SECURITY_SCHEME: []}]
NEXT_PAGE_HEADER = "Elements-Next-Page-Token"
EVENT_TYPES = [kind.value for kind in EventType]
DELIVERY_STATES = [PENDING, RETRYING, QUEUED, DELIVERED, NOT_DELIVERED]
STEP_TYPES = sorted(PROPERTIES)
STEP_STATUSES = ["success", "failed"]
VENDOR_EVENT_STATUSES = list(VendorEventStatus.values)
EXECUTION_STATUSES = list(ExecutionStatus.values)
# Their enum components are named in SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"].


# --- errors -----------------------------------------------------------------------------------

def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(MeshErrorSerializer, description=description)


TOO_LARGE = OpenApiResponse(
    PolymorphicProxySerializer(component_name="ConnectorTooLarge", serializers=[MeshErrorSerializer,
                                                                                  SapErrorSerializer],
                               resource_type_field_name=None),
    description="The body is over the server's limit: `{detail, code, extra}`, or, past MESH_MAX_REQUEST_BODY "
                "under ASGI, `{message}` from the body-limit middleware before any view",
)
COMMON_ERRORS: dict[int, OpenApiResponse] = {
    401: error("Bearer token missing, malformed, invalid or expired (with `WWW-Authenticate`)"),
    403: error("The token is not an open-connectors service key's"),
    503: error("The store is unavailable; retry after `Retry-After` seconds"),
}
NOT_FOUND = {404: error("No such object for this open-connectors instance (another instance's are not found)")}
BODY_ERRORS: dict[int, OpenApiResponse] = {
    400: error("The body is not a JSON object, or a field breaks its rule (named in `detail`, for a "
               "configuration key also in `extra.key`); nothing is stored"),
    413: TOO_LARGE,
    415: error("The body is not `application/json`"),
}
QUERY_ERRORS = {400: error("A query parameter is out of its range")}


def responses(ok: dict[Any, Any], *groups: dict[int, OpenApiResponse], **specific: OpenApiResponse) -> dict:
    """The success answers, the common errors, the groups, then errors named by status (`e409=...`)."""
    merged: dict[Any, Any] = dict(ok)
    for group in (COMMON_ERRORS, *groups):
        merged.update(group)
    merged.update({int(key.removeprefix("e")): value for key, value in specific.items()})
    return merged


def operation(tags: list[str], operation_id: str, summary: str, **kwargs: Any) -> Any:
    return extend_schema(tags=tags, operation_id=operation_id, summary=summary, auth=AUTH, **kwargs)


# --- parameters -------------------------------------------------------------------------------

def _path(name: str, schema: dict[str, Any], description: str) -> OpenApiParameter:
    return OpenApiParameter(name, schema, OpenApiParameter.PATH, required=True, description=description)


def _query(name: str, schema: dict[str, Any], description: str) -> OpenApiParameter:
    return OpenApiParameter(name, schema, OpenApiParameter.QUERY, description=description)


_ID = {"type": "integer", "minimum": 1}
# drf-spectacular names a `pk` path parameter `id` (SCHEMA_COERCE_PATH_PK).
CONNECTOR_ID = _path("id", _ID, "The connector instance's `id`")
CONFIGURATION_KEY = _path("key", {"type": "string", "enum": list(KEYS)}, "A configuration key")
NOTIFICATION_ID = _path("notification_id", {"type": "string", "format": "uuid"},
                        "The notification's `id` (anything else is not found)")
FORMULA_ID = _path("id", _ID, "The formula's `id`")
FORMULA_INSTANCE_ID = _path("instance_id", _ID, "The formula instance's `id`")
EXECUTION_ID = _path("execution_id", _ID, "The execution's `id`")
EVENTS_PAGE_SIZE = _query("pageSize", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                          "At most this many notifications (1..200, default 50)")
EXECUTIONS_PAGE_SIZE = _query("pageSize", {"type": "integer", "minimum": 1, "default": 50},
                              "At most this many executions (default 50; more than 500 is served as 500)")
NEXT_PAGE = _query("nextPage", _ID, f"The previous page's `{NEXT_PAGE_HEADER}`: the page after it")
VENDOR_STATUS = _query("status", {"type": "string", "enum": VENDOR_EVENT_STATUSES},
                       "Only the bodies in this state")


def _paged(serializer: Any, what: str) -> OpenApiResponse:
    return OpenApiResponse(serializer,
                           description=f"{what}, newest first; `{NEXT_PAGE_HEADER}` when there is a next page")


PAGE_HEADERS = [OpenApiParameter(NEXT_PAGE_HEADER, str, OpenApiParameter.HEADER, response=[200],
                                 description="Send it back as `nextPage` for the next page")]


# --- connector instances ----------------------------------------------------------------------

class ElementKeySerializer(serializers.Serializer):
    key = serializers.ChoiceField(choices=sorted(ELEMENT_KEYS))


class ConnectorInstanceSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    element = ElementKeySerializer()
    configuration = serializers.DictField(help_text="Every stored key; secret keys shown as `********`")
    eventsEnabled = serializers.BooleanField()
    eventMeshInstanceId = serializers.UUIDField(allow_null=True)
    topicPrefix = serializers.CharField(allow_blank=True)
    providerAccount = serializers.CharField(allow_blank=True)
    eventsUrl = serializers.URLField(help_text="Where the provider posts its webhooks for this instance")
    createdDate = serializers.DateTimeField()
    updatedDate = serializers.DateTimeField()


class ProviderDataSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="The authorization code the provider redirected the user with")


class ConnectorInstanceCreateSerializer(serializers.Serializer):
    name = serializers.CharField(min_length=1, max_length=200)
    element = ElementKeySerializer()
    configuration = serializers.DictField(
        required=False, help_text=f"Configuration keys ({', '.join(KEYS)}); unknown keys are refused. "
                                  "On PATCH merged into the stored configuration and checked whole")
    eventMeshInstanceId = serializers.UUIDField(
        required=False, allow_null=True, help_text="An Event Mesh instance of the same subaccount, or null")
    topicPrefix = serializers.RegexField(r"^[A-Za-z0-9_./-]*$", max_length=150, required=False, allow_blank=True)
    providerAccount = serializers.CharField(max_length=200, required=False, allow_blank=True,
                                            help_text="The account a provider's webhook body names")
    providerData = ProviderDataSerializer(
        required=False, help_text="On create only: an OAuth2 authorization code, exchanged at the element's token "
                                  "URL (with oauth.api.key, oauth.api.secret, oauth.callback.url); the tokens are "
                                  "stored sealed. A refused exchange is a 400 and nothing is stored")


class ConfigurationEntrySerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The key")
    key = serializers.CharField()
    propertyValue = serializers.JSONField(help_text="`********` for a secret key")


# A raw schema, not a serializer: drf-spectacular makes every PATCH body's fields optional,
# and this one's is required.
CONFIGURATION_VALUE = {"application/json": {
    "type": "object", "required": ["propertyValue"],
    "properties": {"propertyValue": {"description": "The key's new value (checked by the key's rule)"}},
}}


class ConfigurationAnswerSerializer(serializers.Serializer):
    id = serializers.CharField()
    key = serializers.CharField()
    propertyValue = serializers.JSONField(allow_null=True, help_text="null once a key is removed (`\"\"`)")


_CONFLICT = error("A connector instance of this name exists")
INSTANCE_LIST = extend_schema_view(
    get=operation(INSTANCES, "connector_instances_list", "List the connector instances",
                  responses=responses({200: ConnectorInstanceSerializer(many=True)})),
    post=operation(INSTANCES, "connector_instance_create", "Create a connector instance",
                   request=ConnectorInstanceCreateSerializer,
                   responses=responses({201: ConnectorInstanceSerializer}, BODY_ERRORS, e409=_CONFLICT)),
)
INSTANCE = extend_schema_view(
    get=operation(INSTANCES, "connector_instance_get", "Get a connector instance", parameters=[CONNECTOR_ID],
                  responses=responses({200: ConnectorInstanceSerializer}, NOT_FOUND)),
    patch=operation(INSTANCES, "connector_instance_update", "Change a connector instance (any field)",
                    parameters=[CONNECTOR_ID], request=ConnectorInstanceCreateSerializer,
                    responses=responses({200: ConnectorInstanceSerializer}, NOT_FOUND, BODY_ERRORS, e409=_CONFLICT)),
    delete=operation(INSTANCES, "connector_instance_delete", "Delete a connector instance and its event log",
                     parameters=[CONNECTOR_ID],
                     responses=responses({204: OpenApiResponse(description="Deleted")}, NOT_FOUND)),
)
CONFIGURATION_LIST = extend_schema_view(
    get=operation(INSTANCES, "connector_configuration_list", "List a connector instance's configuration",
                  parameters=[CONNECTOR_ID], responses=responses({200: ConfigurationEntrySerializer(many=True)},
                                                                 NOT_FOUND)),
)
CONFIGURATION = extend_schema_view(
    patch=operation(INSTANCES, "connector_configuration_set", "Set one configuration key",
                    parameters=[CONNECTOR_ID, CONFIGURATION_KEY], request=CONFIGURATION_VALUE,
                    responses=responses({200: ConfigurationAnswerSerializer}, NOT_FOUND, BODY_ERRORS)),
)


# --- the event log ----------------------------------------------------------------------------

class ConnectorEventSerializer(serializers.Serializer):
    """One event object as notifications carry it."""

    objectId = serializers.CharField()
    objectType = serializers.CharField()
    eventType = serializers.ChoiceField(choices=EVENT_TYPES)
    elementKey = serializers.CharField()
    date = serializers.DateTimeField()
    pollDate = serializers.DateTimeField(required=False, help_text="Polling events only")


class ConnectorDeliveryAttemptSerializer(serializers.Serializer):
    attemptedDate = serializers.DateTimeField()
    succeeded = serializers.BooleanField()
    statusCode = serializers.IntegerField(allow_null=True, help_text="The callback's status; null if none came")
    latencyMs = serializers.FloatField()
    error = serializers.CharField(allow_blank=True)
    response = serializers.CharField(allow_blank=True, help_text="The start of the callback's answer")


class NotificationSummarySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    createdDate = serializers.DateTimeField()
    source = serializers.ChoiceField(choices=list(NotificationSource.values))
    eventsCount = serializers.IntegerField(min_value=0)
    events = ConnectorEventSerializer(many=True)
    state = serializers.ChoiceField(choices=DELIVERY_STATES, help_text="Read from the delivery engine's rows")
    attempts = serializers.IntegerField(min_value=0)
    nextAttemptDate = serializers.DateTimeField(allow_null=True, help_text="When a retrying one is tried again")
    topicDeliveries = serializers.IntegerField(min_value=0, help_text="Queues its Event Mesh topic publishes reached")
    topicError = serializers.CharField(
        allow_blank=True, help_text="Why publishes onto the bound instance's topics were refused: `<topic>: <reason>` "
                                    "for each, `; `-separated; empty when none was")
    lastAttempt = ConnectorDeliveryAttemptSerializer(allow_null=True)


class NotificationSerializer(NotificationSummarySerializer):
    deliveryAttempts = ConnectorDeliveryAttemptSerializer(many=True, help_text="Oldest first")
    notification = serializers.DictField(help_text="The notification exactly as it was sent to the callback URL")


class RedeliverSerializer(serializers.Serializer):
    ids = serializers.ListField(child=serializers.CharField(), required=False,
                                help_text="Notification ids; without it, every queued notification")


class RedeliveredSerializer(serializers.Serializer):
    redelivered = serializers.IntegerField(min_value=0)


class VendorEventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    receivedDate = serializers.DateTimeField()
    status = serializers.ChoiceField(choices=VENDOR_EVENT_STATUSES)
    reason = serializers.CharField(allow_blank=True, help_text="Why a failed body made nothing")
    eventsCount = serializers.IntegerField(min_value=0)
    contentType = serializers.CharField(allow_blank=True)
    body = serializers.CharField(allow_blank=True,
                                 help_text="The body's first MESH_CONNECTOR_MAX_SHOWN_BODY bytes, as UTF-8")


class PollRunSerializer(serializers.Serializer):
    objectType = serializers.CharField()
    startedDate = serializers.DateTimeField()
    succeeded = serializers.BooleanField()
    records = serializers.IntegerField(min_value=0)
    eventsCount = serializers.IntegerField(min_value=0)
    durationMs = serializers.FloatField(min_value=0)
    error = serializers.CharField(allow_blank=True)


EVENT_LIST = extend_schema_view(
    get=operation(EVENT_LOG, "connector_events_list", "List the notifications",
                  parameters=[CONNECTOR_ID, EVENTS_PAGE_SIZE, NEXT_PAGE, *PAGE_HEADERS],
                  responses=responses({200: _paged(NotificationSummarySerializer(many=True), "Notifications")},
                                      NOT_FOUND, QUERY_ERRORS)),
)
EVENT = extend_schema_view(
    get=operation(EVENT_LOG, "connector_event_get", "Get a notification with its delivery attempts",
                  parameters=[CONNECTOR_ID, NOTIFICATION_ID],
                  responses=responses({200: NotificationSerializer}, NOT_FOUND)),
)
QUEUED_LIST = extend_schema_view(
    get=operation(EVENT_LOG, "connector_events_queued", "List the queued notifications (waiting for a redelivery)",
                  parameters=[CONNECTOR_ID],
                  responses=responses({200: NotificationSummarySerializer(many=True)}, NOT_FOUND)),
)
REDELIVER = extend_schema_view(
    post=operation(EVENT_LOG, "connector_events_redeliver", "Redeliver queued notifications",
                   parameters=[CONNECTOR_ID], request=RedeliverSerializer,
                   responses=responses({200: RedeliveredSerializer}, NOT_FOUND, BODY_ERRORS)),
)
VENDOR_EVENT_LIST = extend_schema_view(
    get=operation(EVENT_LOG, "connector_vendor_events_list", "List what providers posted (newest first, at most 200)",
                  parameters=[CONNECTOR_ID, VENDOR_STATUS],
                  responses=responses({200: VendorEventSerializer(many=True)}, NOT_FOUND, QUERY_ERRORS)),
)
POLL_LIST = extend_schema_view(
    get=operation(EVENT_LOG, "connector_polls_list", "List the polls (newest first, at most 200)",
                  parameters=[CONNECTOR_ID], responses=responses({200: PollRunSerializer(many=True)}, NOT_FOUND)),
)


# --- formulas ---------------------------------------------------------------------------------

class FormulaStepSpecSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="Unique in the formula")
    type = serializers.ChoiceField(choices=STEP_TYPES)
    properties = serializers.DictField(
        help_text="request: `method`, `url`, `headers`?, `body`?; publish: `topic`, `payload`?. Strings may "
                  "refer to `${trigger.event.objectId}` or `${steps.<name>.json.id}`")


class FormulaSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    active = serializers.BooleanField()
    steps = FormulaStepSpecSerializer(many=True)
    createdDate = serializers.DateTimeField()
    updatedDate = serializers.DateTimeField()


class FormulaCreateSerializer(serializers.Serializer):
    name = serializers.CharField(min_length=1, max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10000)
    active = serializers.BooleanField(required=False, default=True)
    steps = FormulaStepSpecSerializer(many=True, max_length=MAX_STEPS)


class FormulaRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()


class ConnectorRefSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The connector instance's id")
    name = serializers.CharField()


class FormulaInstanceSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    active = serializers.BooleanField()
    formula = FormulaRefSerializer()
    element = ConnectorRefSerializer()
    createdDate = serializers.DateTimeField()


class ConnectorIdSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="A connector instance of the same open-connectors instance")


class FormulaInstanceCreateSerializer(serializers.Serializer):
    name = serializers.CharField(min_length=1, max_length=200)
    element = ConnectorIdSerializer()
    active = serializers.BooleanField(required=False, default=True)


class ExecutionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    formulaInstanceId = serializers.IntegerField()
    status = serializers.ChoiceField(choices=EXECUTION_STATUSES)
    attempts = serializers.IntegerField(min_value=0)
    createdDate = serializers.DateTimeField()
    nextAttemptDate = serializers.DateTimeField(allow_null=True)
    finishedDate = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField(allow_blank=True)


class StepExecutionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    type = serializers.CharField()
    attempt = serializers.IntegerField(min_value=0)
    startedDate = serializers.DateTimeField()
    durationMs = serializers.FloatField(min_value=0)
    status = serializers.ChoiceField(choices=STEP_STATUSES)
    result = serializers.DictField(help_text="A request's `{status, body}`, a publish's `{topic, queues}`")
    error = serializers.CharField(allow_blank=True)


class ExecutionDetailSerializer(ExecutionSerializer):
    trigger = serializers.DictField(help_text="`{event, notification}`: the one event object and its notification")
    stepExecutions = StepExecutionSerializer(many=True, help_text="Every step of every attempt")


_FORMULA_CONFLICT = error("A formula of this name exists")
FORMULA_LIST = extend_schema_view(
    get=operation(FORMULAS, "formulas_list", "List the formulas",
                  responses=responses({200: FormulaSerializer(many=True)})),
    post=operation(FORMULAS, "formula_create", "Create a formula", request=FormulaCreateSerializer,
                   responses=responses({201: FormulaSerializer}, BODY_ERRORS, e409=_FORMULA_CONFLICT)),
)
FORMULA = extend_schema_view(
    get=operation(FORMULAS, "formula_get", "Get a formula", parameters=[FORMULA_ID],
                  responses=responses({200: FormulaSerializer}, NOT_FOUND)),
    patch=operation(FORMULAS, "formula_update", "Change a formula (any field)", parameters=[FORMULA_ID],
                    request=FormulaCreateSerializer,
                    responses=responses({200: FormulaSerializer}, NOT_FOUND, BODY_ERRORS, e409=_FORMULA_CONFLICT)),
    delete=operation(FORMULAS, "formula_delete", "Delete a formula, its instances and executions",
                     parameters=[FORMULA_ID],
                     responses=responses({204: OpenApiResponse(description="Deleted")}, NOT_FOUND)),
)
FORMULA_INSTANCE_LIST = extend_schema_view(
    get=operation(FORMULAS, "formula_instances_list", "List a formula's instances", parameters=[FORMULA_ID],
                  responses=responses({200: FormulaInstanceSerializer(many=True)}, NOT_FOUND)),
    post=operation(FORMULAS, "formula_instance_create", "Bind a formula to a connector instance",
                   parameters=[FORMULA_ID], request=FormulaInstanceCreateSerializer,
                   responses=responses({201: FormulaInstanceSerializer}, NOT_FOUND, BODY_ERRORS,
                                       e409=error("A formula instance of this name exists"))),
)
FORMULA_INSTANCE = extend_schema_view(
    get=operation(FORMULAS, "formula_instance_get", "Get a formula instance",
                  parameters=[FORMULA_ID, FORMULA_INSTANCE_ID],
                  responses=responses({200: FormulaInstanceSerializer}, NOT_FOUND)),
    delete=operation(FORMULAS, "formula_instance_delete", "Delete a formula instance and its executions",
                     parameters=[FORMULA_ID, FORMULA_INSTANCE_ID],
                     responses=responses({204: OpenApiResponse(description="Deleted")}, NOT_FOUND)),
)
EXECUTION_LIST = extend_schema_view(
    get=operation(FORMULAS, "formula_executions_list", "List a formula instance's executions",
                  parameters=[FORMULA_INSTANCE_ID, EXECUTIONS_PAGE_SIZE, NEXT_PAGE, *PAGE_HEADERS],
                  responses=responses({200: _paged(ExecutionSerializer(many=True), "Executions")},
                                      NOT_FOUND, QUERY_ERRORS)),
)
EXECUTION = extend_schema_view(
    get=operation(FORMULAS, "formula_execution_get", "Get an execution with every step of every attempt",
                  parameters=[EXECUTION_ID], responses=responses({200: ExecutionDetailSerializer}, NOT_FOUND)),
)

