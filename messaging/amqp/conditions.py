"""Refusals as AMQP error conditions: every MeshError a service raises has one, so a client
hears the same reason over AMQP as over REST (the description is the REST message)."""

from __future__ import annotations

from proton import Condition

from meshsite.errors import MeshError

NOT_FOUND = "amqp:not-found"
UNAUTHORIZED = "amqp:unauthorized-access"
INVALID = "amqp:invalid-field"
DECODE_ERROR = "amqp:decode-error"
RESOURCE_LIMIT = "amqp:resource-limit-exceeded"
RESOURCE_LOCKED = "amqp:resource-locked"
INTERNAL = "amqp:internal-error"
NOT_ALLOWED = "amqp:not-allowed"
MESSAGE_SIZE = "amqp:link:message-size-exceeded"

_BY_STATUS = {
    400: INVALID, 401: UNAUTHORIZED, 403: UNAUTHORIZED, 404: NOT_FOUND, 409: RESOURCE_LOCKED,
    410: NOT_FOUND, 413: MESSAGE_SIZE, 429: RESOURCE_LIMIT, 507: RESOURCE_LIMIT,
}


def for_error(error: MeshError) -> Condition:
    return Condition(_BY_STATUS.get(error.status_code, INTERNAL), error.message)
