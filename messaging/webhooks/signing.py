"""Standard Webhooks signatures for webhook pushes (a meshsite extension, opt-in per subscription).

A push that opts in carries the three headers of https://www.standardwebhooks.com:
`webhook-id` (the same on every retry, so receivers can use it as an idempotency key),
`webhook-timestamp` (integer seconds of this attempt) and `webhook-signature`, a
space-separated list of `v1,<base64 HMAC-SHA256>` over `{id}.{timestamp}.{body}`, one entry
per secret. Two secrets sign while a subscription rotates its secret, so a receiver still
configured with the old one keeps verifying until it switches. Secrets are shown to users as
`whsec_<base64 key>`. Everything here is pure: the caller supplies the id, clock and secrets.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _random
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
# The spec's bounds for a symmetric signing key (192 to 512 bits).
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
# 32 bytes = the HMAC-SHA256 output length, the key size RFC 2104 recommends.
NEW_KEY_BYTES = 32

# The spec only forbids `.` in the id (it delimits the signed content, so a dot would let an
# attacker shift the id/timestamp boundary). We are stricter: the id is also an HTTP header
# value and an idempotency key in receivers' stores, so keep to a token-safe alphabet that
# covers `msg_...` style ids and UUIDs.
MAX_MESSAGE_ID_LENGTH = 255
_MESSAGE_ID_RE = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_MESSAGE_ID_LENGTH}}}")
# Standard alphabet only: the reference decoder silently drops characters outside it (such as
# URL-safe `-`/`_` or whitespace), so accepting them would give the receiver a different key.
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")

SIGNATURE_VERSION = "v1"
ELEMENTS_HEADER = "Elements-Webhook-Signature"


def new_secret() -> str:
    """A fresh signing secret in the `whsec_<base64>` form that receivers' libraries accept."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(NEW_KEY_BYTES)).decode("ascii")


def validate_secret(secret: str) -> str:
    """Return `secret` unchanged if it is a usable `whsec_` secret, else raise ValueError."""
    _decode_secret(secret)
    return secret


def signature_headers(*, message_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> dict[str, str]:
    """The Standard Webhooks headers for one delivery attempt of `body`."""
    _check_message_id(message_id)
    _check_timestamp(timestamp)
    if not isinstance(body, bytes):
        raise TypeError(f"body must be bytes (the exact bytes sent), not {type(body).__name__}")
    keys = _decode_secrets(secrets)
    signed = f"{message_id}.{timestamp}.".encode("ascii") + body
    signatures = [_sign(key, signed) for key in keys]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }


def elements_signature(key: bytes | str, body: bytes) -> str:
    """The connectors' `Elements-Webhook-Signature` value: sha256=<base64 HMAC-SHA256(key, body)>."""
    if isinstance(key, str):
        key = key.encode()
    digest = hmac.new(key, body, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode("ascii")


def _sign(key: bytes, signed: bytes) -> str:
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def _check_message_id(message_id: str) -> None:
    if not isinstance(message_id, str):
        raise TypeError(f"webhook message id must be a string, not {type(message_id).__name__}")
    if not message_id:
        raise ValueError("webhook message id must not be empty")
    if not _MESSAGE_ID_RE.fullmatch(message_id):
        raise ValueError(
            f"webhook message id must be 1-{MAX_MESSAGE_ID_LENGTH} characters from A-Z, a-z, 0-9, '_' and '-' "
            "(no '.', whitespace or other punctuation)"
        )


def _check_timestamp(timestamp: int) -> None:
    # bool is an int subclass; a float would render as "1.5e9" or "1700000000.25", which
    # receivers either reject or re-render differently from what we signed.
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise TypeError(f"webhook timestamp must be integer seconds, not {type(timestamp).__name__}")
    if timestamp < 0:
        raise ValueError("webhook timestamp must not be negative")


def _decode_secrets(secrets: Sequence[str]) -> list[bytes]:
    # A lone str is a Sequence[str] too: iterating it would sign with each character.
    if isinstance(secrets, str):
        raise TypeError("secrets must be a sequence of secrets, not a single string")
    if not secrets:
        raise ValueError("at least one webhook secret is needed to sign")
    keys: list[bytes] = []
    for secret in secrets:
        key = _decode_secret(secret)
        if key not in keys:  # the same secret twice adds nothing but header length
            keys.append(key)
    return keys


def _decode_secret(secret: str) -> bytes:
    if not isinstance(secret, str):
        raise TypeError(f"webhook secret must be a string, not {type(secret).__name__}")
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"webhook secret must start with '{SECRET_PREFIX}'")
    encoded = secret[len(SECRET_PREFIX) :]
    if not encoded:
        raise ValueError(f"webhook secret has no key after '{SECRET_PREFIX}'")
    if not _BASE64_RE.fullmatch(encoded):
        raise ValueError(
            f"webhook secret after '{SECRET_PREFIX}' must be standard base64 "
            "(A-Z, a-z, 0-9, '+', '/', '=' padding; no whitespace or URL-safe '-'/'_')"
        )
    key = _b64decode_padded(encoded)
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(
            f"webhook secret key must be {MIN_KEY_BYTES}-{MAX_KEY_BYTES} bytes once base64-decoded, got {len(key)}"
        )
    return key


def _b64decode_padded(encoded: str) -> bytes:
    # Secrets from other senders are sometimes unpadded; receivers' libraries re-pad too.
    stripped = encoded.rstrip("=")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except binascii.Error as error:
        raise ValueError(f"webhook secret after '{SECRET_PREFIX}' is not valid base64: {error}") from None
