"""Credentials meshsite must send on, kept encrypted at rest.

A service key's secret is only ever compared, so it is hashed. A webhook's basic-auth
password or OAuth2 client secret must be presented to someone else, so it cannot be hashed:
it is sealed with Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from SECRET_KEY.
SECRET_KEY_FALLBACKS still open what older keys sealed, so the key can be rotated; `reseal`
moves a value to the current key.
"""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

PREFIX = "fernet:"


class SecretUnreadable(ValueError):
    pass


@functools.lru_cache(maxsize=16)
def _fernet(secret_key: str) -> Fernet:
    # Cached: the derivation is most of an unseal's cost, and the provider webhook intake
    # unseals an instance's secrets on every request.
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"meshsite secretbox v1").derive(
        secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived))


def _box() -> MultiFernet:
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet([_fernet(key) for key in keys])


def seal(plaintext: str) -> str:
    return PREFIX + _box().encrypt(plaintext.encode()).decode()


def unseal(sealed: str) -> str:
    if not sealed.startswith(PREFIX):
        raise SecretUnreadable("not a sealed value")
    try:
        return _box().decrypt(sealed.removeprefix(PREFIX).encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("sealed with a key that is neither SECRET_KEY nor in SECRET_KEY_FALLBACKS") from None


def reseal(sealed: str) -> str:
    return PREFIX + _box().rotate(sealed.removeprefix(PREFIX).encode()).decode()
