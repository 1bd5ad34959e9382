"""Standard Webhooks signatures, checked by the independent reference implementation
(`standardwebhooks` from PyPI) acting as the receiver: what meshsite signs, it verifies; what
anyone tampers with, or signs with another secret, or too long ago, it rejects."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from messaging.webhooks.signing import (
    MAX_KEY_BYTES,
    MAX_MESSAGE_ID_LENGTH,
    MIN_KEY_BYTES,
    new_secret,
    signature_headers,
    validate_secret,
)

BODY = b'{"topic":"sales/orders","data":{"id":42}}'
MESSAGE_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
NO_MATCH = "No matching signature found"


def _secret(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


OLD_SECRET = _secret(bytes(range(32)))
NEW_SECRET = _secret(bytes(range(100, 132)))
OTHER_SECRET = _secret(b"\xaa" * 32)


def _now() -> int:
    return int(time.time())


def _headers(body: bytes = BODY, *, secrets: list[str] | None = None, timestamp: int | None = None) -> dict[str, str]:
    return signature_headers(
        message_id=MESSAGE_ID,
        timestamp=_now() if timestamp is None else timestamp,
        body=body,
        secrets=secrets or [NEW_SECRET],
    )


def _spec_verify(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """The spec's check on raw bytes, for bodies the reference cannot take (it decodes them as
    UTF-8 first). Validated against the reference on every UTF-8 body in the property test."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(f"v1,{expected}", sig) for sig in headers["webhook-signature"].split(" "))


# --- the reference receiver verifies what we sign ---------------------------------------------


def test_reference_verifies_single_secret_signature_and_returns_the_payload() -> None:
    headers = _headers()

    assert Webhook(NEW_SECRET).verify(BODY, headers) == {"topic": "sales/orders", "data": {"id": 42}}


def test_headers_carry_the_given_id_integer_seconds_and_one_v1_signature() -> None:
    headers = _headers(timestamp=1674087231)

    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == MESSAGE_ID
    assert headers["webhook-timestamp"] == "1674087231"
    version, signature = headers["webhook-signature"].split(",")
    assert version == "v1"
    assert len(base64.b64decode(signature, validate=True)) == 32  # one SHA-256 digest


def test_signature_matches_the_reference_signer_for_the_same_inputs() -> None:
    timestamp = 1674087231
    headers = _headers(timestamp=timestamp)

    reference = Webhook(NEW_SECRET).sign(MESSAGE_ID, datetime.fromtimestamp(timestamp, tz=UTC), BODY.decode())
    assert headers["webhook-signature"] == reference


def test_retry_keeps_the_id_and_re_signs_with_the_new_timestamp() -> None:
    first = _headers(timestamp=_now() - 60)
    retry = _headers(timestamp=_now())

    assert retry["webhook-id"] == first["webhook-id"] == MESSAGE_ID
    assert retry["webhook-signature"] != first["webhook-signature"]
    Webhook(NEW_SECRET).verify(BODY, first)
    Webhook(NEW_SECRET).verify(BODY, retry)


def test_unpadded_secret_signs_with_the_same_key_the_reference_derives() -> None:
    key = bytes(range(40, 72))  # 32 bytes: base64 ends in one '='
    padded = _secret(key)
    unpadded = padded.rstrip("=")
    assert unpadded != padded

    headers = _headers(secrets=[unpadded])

    Webhook(padded).verify(BODY, headers)
    Webhook(unpadded).verify(BODY, headers)


# --- rotation ---------------------------------------------------------------------------------


def test_rotation_sends_one_signature_per_secret() -> None:
    signatures = _headers(secrets=[NEW_SECRET, OLD_SECRET])["webhook-signature"].split(" ")

    assert len(signatures) == 2
    assert all(sig.startswith("v1,") for sig in signatures)
    assert signatures[0] != signatures[1]


@pytest.mark.parametrize("receiver_secret", [NEW_SECRET, OLD_SECRET], ids=["new", "old"])
def test_rotation_verifies_for_a_receiver_with_either_secret(receiver_secret: str) -> None:
    headers = _headers(secrets=[NEW_SECRET, OLD_SECRET])

    Webhook(receiver_secret).verify(BODY, headers)


def test_rotation_rejects_a_receiver_with_an_unrelated_secret() -> None:
    headers = _headers(secrets=[NEW_SECRET, OLD_SECRET])

    with pytest.raises(WebhookVerificationError, match=NO_MATCH):
        Webhook(OTHER_SECRET).verify(BODY, headers)


def test_single_secret_rejects_a_receiver_with_another_secret() -> None:
    with pytest.raises(WebhookVerificationError, match=NO_MATCH):
        Webhook(OLD_SECRET).verify(BODY, _headers(secrets=[NEW_SECRET]))


def test_the_same_secret_twice_signs_once() -> None:
    headers = _headers(secrets=[NEW_SECRET, NEW_SECRET])

    assert headers["webhook-signature"] == _headers(secrets=[NEW_SECRET])["webhook-signature"]


# --- tampering --------------------------------------------------------------------------------


def test_tampered_body_is_rejected() -> None:
    headers = _headers()

    with pytest.raises(WebhookVerificationError, match=NO_MATCH):
        Webhook(NEW_SECRET).verify(BODY.replace(b"42", b"43"), headers)


def test_tampered_id_is_rejected() -> None:
    headers = _headers() | {"webhook-id": MESSAGE_ID + "x"}

    with pytest.raises(WebhookVerificationError, match=NO_MATCH):
        Webhook(NEW_SECRET).verify(BODY, headers)


def test_tampered_timestamp_within_tolerance_is_rejected() -> None:
    now = _now()
    headers = _headers(timestamp=now) | {"webhook-timestamp": str(now - 1)}

    # Still inside the reference's window, so only the signature can be what fails.
    with pytest.raises(WebhookVerificationError, match=NO_MATCH):
        Webhook(NEW_SECRET).verify(BODY, headers)


# --- timestamp tolerance (proves the header is in seconds) ------------------------------------


def test_timestamp_a_few_minutes_old_is_still_accepted() -> None:
    Webhook(NEW_SECRET).verify(BODY, _headers(timestamp=_now() - 4 * 60))


def test_timestamp_too_old_is_rejected_by_the_reference() -> None:
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(NEW_SECRET).verify(BODY, _headers(timestamp=_now() - 10 * 60))


def test_timestamp_too_new_is_rejected_by_the_reference() -> None:
    with pytest.raises(WebhookVerificationError, match="too new"):
        Webhook(NEW_SECRET).verify(BODY, _headers(timestamp=_now() + 10 * 60))


def test_millisecond_timestamp_would_be_rejected_so_seconds_are_what_verify() -> None:
    # Milliseconds overflow the reference's datetime parsing rather than landing "too new".
    with pytest.raises(WebhookVerificationError, match="Invalid Signature Headers|too new"):
        Webhook(NEW_SECRET).verify(BODY, _headers(timestamp=_now() * 1000))


# --- new_secret -------------------------------------------------------------------------------


def test_new_secret_has_prefix_and_a_32_byte_standard_base64_key() -> None:
    secret = new_secret()

    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert validate_secret(secret) == secret


def test_new_secret_is_accepted_by_the_reference_and_verifies() -> None:
    secret = new_secret()

    Webhook(secret).verify(BODY, _headers(secrets=[secret]))


def test_new_secrets_differ() -> None:
    assert len({new_secret() for _ in range(20)}) == 20


# --- validate_secret --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [MIN_KEY_BYTES, 32, MAX_KEY_BYTES])
def test_validate_secret_accepts_keys_within_the_spec_bounds(size: int) -> None:
    secret = _secret(b"k" * size)

    assert validate_secret(secret) == secret


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (base64.b64encode(b"k" * 32).decode(), "must start with 'whsec_'"),
        ("WHSEC_" + base64.b64encode(b"k" * 32).decode(), "must start with 'whsec_'"),
        ("", "must start with 'whsec_'"),
        ("whsec_", "has no key after 'whsec_'"),
        ("whsec_" + base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(), "must be standard base64"),
        (" " + _secret(b"k" * 32), "must start with 'whsec_'"),
        (_secret(b"k" * 32) + "\n", "must be standard base64"),
        ("whsec_abc def", "must be standard base64"),
        ("whsec_" + "A" * 33, "not valid base64"),  # 33 characters cannot be base64
        ("whsec_" + "=" + "A" * 32, "must be standard base64"),  # padding only at the end
        (_secret(b"k" * (MIN_KEY_BYTES - 1)), f"must be {MIN_KEY_BYTES}-{MAX_KEY_BYTES} bytes.*got 23"),
        (_secret(b"k" * (MAX_KEY_BYTES + 1)), f"must be {MIN_KEY_BYTES}-{MAX_KEY_BYTES} bytes.*got 65"),
    ],
    ids=[
        "no-prefix",
        "uppercase-prefix",
        "empty",
        "prefix-only",
        "urlsafe-alphabet",
        "leading-space",
        "trailing-newline",
        "inner-space",
        "impossible-length",
        "padding-first",
        "too-short",
        "too-long",
    ],
)
def test_validate_secret_rejects_with_a_clear_message(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_secret(secret)


def test_urlsafe_secret_would_give_the_reference_a_different_key() -> None:
    """Why the URL-safe alphabet is refused: the reference silently drops '-' and '_'."""
    key = b"\xfb\xff" * 16
    urlsafe = "whsec_" + base64.urlsafe_b64encode(key).decode()
    headers = _headers(secrets=[_secret(key)])

    with pytest.raises(WebhookVerificationError, match=NO_MATCH):
        Webhook(urlsafe).verify(BODY, headers)


def test_validate_secret_rejects_a_non_string() -> None:
    with pytest.raises(TypeError, match="must be a string"):
        validate_secret(b"whsec_" + base64.b64encode(b"k" * 32))  # type: ignore[arg-type]


# --- signature_headers input checks -----------------------------------------------------------


@pytest.mark.parametrize(
    ("message_id", "message"),
    [
        ("", "must not be empty"),
        ("msg.1674087231", "no '.'"),
        ("msg 1", "no '.', whitespace"),
        ("msg\r\nx-injected: 1", "no '.', whitespace"),
        ("msg\t1", "no '.', whitespace"),
        ("msg,1", "other punctuation"),
        ("msg_é", "A-Z, a-z, 0-9"),
        ("m" * (MAX_MESSAGE_ID_LENGTH + 1), f"1-{MAX_MESSAGE_ID_LENGTH} characters"),
    ],
    ids=["empty", "dot", "space", "crlf", "tab", "comma", "non-ascii", "too-long"],
)
def test_signature_headers_rejects_unsafe_message_ids(message_id: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        signature_headers(message_id=message_id, timestamp=_now(), body=BODY, secrets=[NEW_SECRET])


@pytest.mark.parametrize("message_id", [str(uuid.uuid4()), uuid.uuid4().hex, MESSAGE_ID, "m" * MAX_MESSAGE_ID_LENGTH])
def test_signature_headers_accepts_uuid_and_msg_style_ids(message_id: str) -> None:
    headers = signature_headers(message_id=message_id, timestamp=_now(), body=BODY, secrets=[NEW_SECRET])

    Webhook(NEW_SECRET).verify(BODY, headers)


@pytest.mark.parametrize(
    ("timestamp", "error", "message"),
    [
        (1674087231.5, TypeError, "integer seconds, not float"),
        (True, TypeError, "integer seconds, not bool"),
        ("1674087231", TypeError, "integer seconds, not str"),
        (-1, ValueError, "must not be negative"),
    ],
    ids=["float", "bool", "str", "negative"],
)
def test_signature_headers_rejects_non_integer_or_negative_timestamps(
    timestamp: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        signature_headers(message_id=MESSAGE_ID, timestamp=timestamp, body=BODY, secrets=[NEW_SECRET])  # type: ignore[arg-type]


def test_signature_headers_rejects_a_str_body() -> None:
    with pytest.raises(TypeError, match="body must be bytes"):
        signature_headers(message_id=MESSAGE_ID, timestamp=_now(), body=BODY.decode(), secrets=[NEW_SECRET])  # type: ignore[arg-type]


def test_signature_headers_needs_at_least_one_secret() -> None:
    with pytest.raises(ValueError, match="at least one webhook secret"):
        signature_headers(message_id=MESSAGE_ID, timestamp=_now(), body=BODY, secrets=[])


def test_signature_headers_rejects_a_single_string_as_the_secrets_list() -> None:
    with pytest.raises(TypeError, match="not a single string"):
        signature_headers(message_id=MESSAGE_ID, timestamp=_now(), body=BODY, secrets=NEW_SECRET)


def test_signature_headers_rejects_an_invalid_secret_among_valid_ones() -> None:
    with pytest.raises(ValueError, match="must start with 'whsec_'"):
        signature_headers(message_id=MESSAGE_ID, timestamp=_now(), body=BODY, secrets=[NEW_SECRET, "not-a-secret"])


# --- property: the reference verifies whatever we sign ----------------------------------------

message_ids = st.one_of(
    st.text(
        alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"),
        min_size=1,
        max_size=MAX_MESSAGE_ID_LENGTH,
    ),
    st.uuids().map(str),
)
utf8_bodies = st.text().map(str.encode)
bodies = st.one_of(st.binary(max_size=2048), utf8_bodies)
keys = st.binary(min_size=MIN_KEY_BYTES, max_size=MAX_KEY_BYTES)


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(message_id=message_ids, body=bodies, key=keys, old_key=st.none() | keys)
@example(message_id="msg_1", body=b"", key=b"k" * 32, old_key=None)
@example(message_id="msg_1", body=b"\xff\xfe\x00", key=b"k" * 32, old_key=b"o" * 32)
@example(message_id="msg_1", body="grüße".encode(), key=b"k" * 24, old_key=None)
def test_reference_verifies_every_signed_body(message_id: str, body: bytes, key: bytes, old_key: bytes | None) -> None:
    signing = [_secret(key)] + ([_secret(old_key)] if old_key is not None else [])
    headers = signature_headers(message_id=message_id, timestamp=_now(), body=body, secrets=signing)

    for secret in signing:
        assert _spec_verify(secret, body, headers)
        if _is_utf8(body):
            Webhook(secret).verify(body, headers, json_parse=False)
        else:
            # The reference decodes the body as UTF-8 before checking anything, so it cannot
            # verify a binary payload at all; receivers in other languages can.
            with pytest.raises(UnicodeDecodeError):
                Webhook(secret).verify(body, headers, json_parse=False)
    unrelated = bytes(b ^ 1 for b in key)
    if unrelated != old_key:
        assert not _spec_verify(_secret(unrelated), body, headers)


@settings(max_examples=100, deadline=None)
@given(message_id=message_ids, text=st.text(), key=keys, position=st.integers(min_value=0),
       replacement=st.characters(codec="utf-8"))  # no lone surrogate: it has no UTF-8 form
def test_reference_rejects_any_single_character_change_to_the_body(
    message_id: str, text: str, key: bytes, position: int, replacement: str
) -> None:
    body = text.encode()
    headers = signature_headers(message_id=message_id, timestamp=_now(), body=body, secrets=[_secret(key)])
    # Change one character but keep the body valid UTF-8, so the signature is what fails.
    index = position % (len(text) + 1)
    tampered = (text[:index] + replacement + text[index + 1 :]).encode()
    if tampered == body:
        tampered = (text + replacement).encode()

    with pytest.raises(WebhookVerificationError, match=NO_MATCH):
        Webhook(_secret(key)).verify(tampered, headers, json_parse=False)
