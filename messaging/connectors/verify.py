"""Providers' own webhook signatures, checked with an instance's `event.vendor.secret`.

The element says how its provider signs (`elements.Signature`); this module computes the
HMAC and compares it in constant time. The check itself is pure: the caller supplies the
secret, the headers, the URI and the clock -- the time the body was *received*, so that a
body stored at the account URL and processed a minute later by a worker is judged by when it
arrived, not by how long the queue was. A refusal's reason names the header and never holds
the secret or the expected digest.

On an instance's token URL the instance is known in the request, so a refused signature is a
401 and nothing is stored (`request_check`). At the account URL the instances are known only
once the body is parsed, so the body keeps the headers its element names (`kept_headers`)
and each instance with a secret checks them when the body is processed (`instances_split`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from meshsite.errors import Unauthorized

from ..models import ConnectorInstance
from .elements import Element, Signature

VENDOR_SECRET = "event.vendor.secret"
# A stored header value is at most this long: signatures are 44 to 71 characters.
MAX_HEADER = 256

# HubSpot v3 signs the URI with these decoded (its validation guide's table); the `?` that
# starts the query string is sent as is anyway.
_HUBSPOT_DECODED = {"3A": ":", "2F": "/", "3F": "?", "40": "@", "21": "!", "24": "$", "27": "'", "28": "(",
                    "29": ")", "2A": "*", "2C": ",", "3B": ";"}
_ENCODED = re.compile("%(" + "|".join(_HUBSPOT_DECODED) + ")", re.IGNORECASE)


class SignatureRefused(Unauthorized):
    code = "invalid_signature"


@dataclass(frozen=True)
class Signed:
    """What a provider's signature covers, as the request brought it."""

    body: bytes
    headers: Mapping[str, str]
    uri: str
    received_at: datetime
    method: str = "POST"


def kept_headers(signature: Signature | None, headers: Mapping[str, str]) -> dict[str, str]:
    """The signature headers of a request that are present (read case-insensitively), to store."""
    if signature is None:
        return {}
    return {name: headers[name][:MAX_HEADER] for name in signature.headers() if name in headers}


def hubspot_uri(uri: str) -> str:
    return _ENCODED.sub(lambda found: _HUBSPOT_DECODED[found.group(1).upper()], uri)


def _message(signature: Signature, signed: Signed, timestamp: str) -> bytes:
    if signature.signed == "body":
        return signed.body
    return signed.method.encode() + hubspot_uri(signed.uri).encode() + signed.body + timestamp.encode()


def _digest(signature: Signature, secret: str, message: bytes) -> str:
    mac = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return mac.hex() if signature.encoding == "hex" else base64.b64encode(mac).decode()


def _timestamp_refusal(name: str, value: str, received_at: datetime, max_age: int) -> str | None:
    if not value.isascii() or not value.isdigit():
        return f"{name} is missing or not epoch milliseconds"
    # Both ways: a timestamp far ahead would keep a captured body replayable for that long.
    skew = received_at.timestamp() - int(value) / 1000
    if skew > max_age:
        return f"{name} is more than {max_age} s older than the request"
    if skew < -max_age:
        return f"{name} is more than {max_age} s ahead of the request"
    return None


def signature_refusal(signature: Signature, *, secret: str, signed: Signed, max_age: int) -> str | None:
    """Why the signature does not verify, or None when it does."""
    given = signed.headers.get(signature.header, "")
    if not given:
        return f"no {signature.header} header"
    timestamp = ""
    if signature.timestamp_header:
        timestamp = signed.headers.get(signature.timestamp_header, "")
        stale = _timestamp_refusal(signature.timestamp_header, timestamp, signed.received_at, max_age)
        if stale is not None:
            return stale
    expected = signature.prefix + _digest(signature, secret, _message(signature, signed, timestamp))
    # Hex digests are compared without regard to case; base64 is case-sensitive.
    shown = given.strip().lower() if signature.encoding == "hex" else given.strip()
    if not hmac.compare_digest(expected.encode(), shown.encode("utf-8", "replace")):
        return f"{signature.header} does not match the body (or the secret is not the provider's)"
    return None


def _instance_refusal(element: Element, instance: ConnectorInstance, signed: Signed, max_age: int) -> str | None:
    secret = instance.secret(VENDOR_SECRET)
    if not secret:
        return None  # no secret: the instance trusts the URL, as before signatures were checked
    if element.signature is None:
        return f"element {element.key!r} has no signature scheme, but {VENDOR_SECRET} is set"
    return signature_refusal(element.signature, secret=secret, signed=signed, max_age=max_age)


def request_check(element: Element, instance: ConnectorInstance, signed: Signed, *, max_age: int) -> None:
    """SignatureRefused (401) when the instance has a vendor secret the request is not signed with."""
    refusal = _instance_refusal(element, instance, signed, max_age)
    if refusal is not None:
        raise SignatureRefused(f"Signature refused: {refusal}",
                               extra={"header": element.signature.header if element.signature else None})


def instances_split(element: Element, instances: list[ConnectorInstance], signed: Signed, *,
                    max_age: int) -> tuple[list[ConnectorInstance], list[str]]:
    """The instances that accept a stored body, and a reason for each one that refuses it."""
    accepted: list[ConnectorInstance] = []
    refusals: list[str] = []
    for instance in instances:
        refusal = _instance_refusal(element, instance, signed, max_age)
        if refusal is None:
            accepted.append(instance)
        else:
            refusals.append(f"connector instance {instance.pk} refused the signature: {refusal}")
    return accepted, refusals
