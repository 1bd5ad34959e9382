"""Element (provider) definitions as data.

An element says, for one provider's webhook body, where the list of changed objects is, how
each object maps to `objectType` / `objectId` / `eventType` / `date`, and where the instance
ref (the provider account the body belongs to) is, and how the provider signs its webhooks
(`Signature`, checked by `verify.py` with the instance's `event.vendor.secret`). Definitions
are frozen data so that a new provider, or a configured generic JSON element, needs no code:
`normalize.py` and `verify.py` interpret them.
The shipped definitions follow the providers' public webhook formats.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

# How polls authenticate to the provider (messaging.connectors.credentials); "any": the
# configuration says, with the keys of one style (the generic element).
AuthStyle = Literal["oauth2", "apikey", "basic", "none", "any"]


class EventType(StrEnum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class Const:
    """A value every object gets, whatever the body says."""

    value: str


@dataclass(frozen=True)
class Path:
    """A dotted JSON path inside one object ("" = the object itself; digits index arrays).

    `segment` picks one `.`-separated part of the string found (HubSpot packs the object
    type and the change into `"contact.creation"`); `append` is added after it ("s" turns
    HubSpot's singular "contact" into the collection name "contacts"); `names` overrides
    it for words whose plural is not a plain "s" ("company" → "companies").
    """

    path: str
    segment: int | None = None
    append: str = ""
    names: tuple[tuple[str, str], ...] = ()


Source = Const | Path


@dataclass(frozen=True)
class Signature:
    """How a provider signs a webhook: HMAC-SHA256 keyed with the instance's vendor secret.

    `signed` says what goes into the HMAC: the raw body, or (HubSpot v3) the method, the full
    request URI, the raw body and the timestamp header's value, concatenated. `prefix` is text
    before the digest in the header (`sha256=`); `timestamp_header` carries epoch
    milliseconds, too old (or too far ahead) a value is refused.
    """

    header: str
    signed: Literal["body", "method+uri+body+timestamp"] = "body"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    timestamp_header: str = ""

    def headers(self) -> tuple[str, ...]:
        """The request headers the check reads (what a body keeps for a later check)."""
        return (self.header, self.timestamp_header) if self.timestamp_header else (self.header,)

    def needs_uri(self) -> bool:
        return "uri" in self.signed

# Vendor words, lowercased, for a change. Lookups lowercase the vendor's word, so
# Salesforce's CREATE and a generic "Created" land on the same entry.
DEFAULT_EVENT_TYPES: MappingProxyType[str, EventType] = MappingProxyType(
    {
        "create": EventType.CREATED,
        "created": EventType.CREATED,
        "creation": EventType.CREATED,
        "insert": EventType.CREATED,
        "restore": EventType.CREATED,
        "undelete": EventType.CREATED,
        "update": EventType.UPDATED,
        "updated": EventType.UPDATED,
        "propertychange": EventType.UPDATED,
        "associationchange": EventType.UPDATED,
        "merge": EventType.UPDATED,
        "modified": EventType.UPDATED,
        "delete": EventType.DELETED,
        "deleted": EventType.DELETED,
        "deletion": EventType.DELETED,
        "gdpr_delete": EventType.DELETED,
        "privacydeletion": EventType.DELETED,
    }
)


@dataclass(frozen=True)
class Element:
    key: str
    name: str
    base_url: str
    auth: AuthStyle
    # Where the changed objects are in the body ("" = the body itself). An object (not an
    # array) found there counts as the one changed object.
    objects_path: str
    object_type: Source
    object_id: Source
    event_type: Source
    # None: the object carries no date, so the event is dated when it was received.
    date: Source | None
    # A path inside each object to an array of ids: one event per id, whose objectId is that
    # id (`object_id` is then unused); Salesforce's Change Data Capture names several records
    # in one change event.
    fan_out: str = ""
    event_types: MappingProxyType[str, EventType] = field(default_factory=lambda: DEFAULT_EVENT_TYPES)
    # A path in the whole body to the provider account; "" = the body names none.
    instance_ref: str = ""
    # None: the provider does not sign its webhooks (the token URL is the only authentication).
    signature: Signature | None = None
    # apikey: the header the `api.key` goes in, after the prefix.
    api_key_header: str = "Authorization"
    api_key_prefix: str = "Bearer "
    # oauth2: where a refresh token is exchanged for a new access token.
    token_url: str = ""


GENERIC = Element(
    key="generic",
    name="Generic JSON",
    base_url="",
    auth="any",
    objects_path="",
    object_type=Path("objectType"),
    object_id=Path("objectId"),
    event_type=Path("eventType"),
    date=Path("date"),
    instance_ref="",
    # meshsite's own choice, GitHub's format: any sender can make it with one HMAC call.
    signature=Signature(header="X-Signature-256", prefix="sha256="),
)

# https://www.dropbox.com/developers/reference/webhooks: the notification names only the
# accounts whose files changed; the application then lists the folder to learn what changed.
DROPBOX = Element(
    key="dropbox",
    name="Dropbox",
    base_url="https://api.dropboxapi.com/2",
    auth="oauth2",
    objects_path="list_folder.accounts",
    object_type=Const("files"),
    object_id=Path(""),
    event_type=Const(EventType.UPDATED),
    date=None,
    instance_ref="list_folder.accounts.0",
    # Hex HMAC-SHA256 of the raw body, keyed with the app secret.
    signature=Signature(header="X-Dropbox-Signature"),
    token_url="https://api.dropboxapi.com/oauth2/token",
)

# https://developers.hubspot.com/docs/api/webhooks: an array of events, each
# {"eventId", "subscriptionType": "contact.creation", "objectId", "portalId", "occurredAt" (ms)}.
HUBSPOT = Element(
    key="hubspot",
    name="HubSpot",
    base_url="https://api.hubapi.com",
    auth="oauth2",
    objects_path="",
    object_type=Path("subscriptionType", segment=0, append="s", names=(("company", "companies"),)),
    object_id=Path("objectId"),
    event_type=Path("subscriptionType", segment=-1),
    date=Path("occurredAt"),
    instance_ref="0.portalId",
    # https://developers.hubspot.com/docs/api/webhooks/validating-requests, v3: base64
    # HMAC-SHA256 keyed with the app's client secret; older than 5 minutes is refused.
    signature=Signature(header="X-HubSpot-Signature-v3", signed="method+uri+body+timestamp", encoding="base64",
                        timestamp_header="X-HubSpot-Request-Timestamp"),
    token_url="https://api.hubapi.com/oauth/v1/token",
)

# Change Data Capture event JSON: {"payload": {"ChangeEventHeader": {"entityName",
# "changeType", "recordIds": [...], "commitTimestamp" (ms)}}}, one event per record id.
SALESFORCE = Element(
    key="sfdc",
    name="Salesforce",
    base_url="https://login.salesforce.com/services/data/v60.0",
    auth="oauth2",
    objects_path="payload.ChangeEventHeader",
    object_type=Path("entityName"),
    object_id=Path(""),
    event_type=Path("changeType"),
    date=Path("commitTimestamp"),
    fan_out="recordIds",
    instance_ref="",
    token_url="https://login.salesforce.com/services/oauth2/token",
)

# Outbound Messages as JSON: {"OrganizationId", "notifications": [{"Id", "sObject": {"type",
# "Id", ...}}]}. A workflow fires them on create or edit without saying which, hence UNKNOWN;
# the sObject carries only the fields the workflow chose, so no date can be relied on.
SALESFORCE_OUTBOUND = Element(
    key="sfdc-outbound",
    name="Salesforce Outbound Messages",
    base_url=SALESFORCE.base_url,
    auth="oauth2",
    objects_path="notifications",
    object_type=Path("sObject.type"),
    object_id=Path("sObject.Id"),
    event_type=Const(EventType.UNKNOWN),
    date=None,
    instance_ref="OrganizationId",
    token_url=SALESFORCE.token_url,
)

ELEMENTS: dict[str, Element] = {e.key: e for e in (GENERIC, DROPBOX, HUBSPOT, SALESFORCE, SALESFORCE_OUTBOUND)}


def element(key: str) -> Element | None:
    return ELEMENTS.get(key)


def generic(*, objects_path: str = "", **mapping: Source | str | None) -> Element:
    """A generic JSON element with its objects at `objects_path` and any field remapped."""
    return dataclasses.replace(GENERIC, objects_path=objects_path, **mapping)  # type: ignore[arg-type]
