"""How service-key client secrets are stored: HMAC-SHA256 under a server-side key.

A client secret is 256 random bits (`services.service_key_create`), not a password a person
chose, so nobody can guess it and a slow KDF buys nothing: PBKDF2 cost ~0.3 s of CPU per token
request and let a handful of requests per second occupy both cores. API-token services store
such secrets as a keyed hash; so does this hasher, registered in PASSWORD_HASHERS (never first:
people's passwords stay on PBKDF2) and named by django-oauth-toolkit's CLIENT_SECRET_HASHER.

The key is derived from SECRET_KEY with a label of its own (so it is not the key that signs
sessions), as meshsite/secretbox.py derives its key: one secret for operators to keep, and the
same rotation story. Each hash names the key it was made with (a short key id, not the key),
so a hash made under a key now in SECRET_KEY_FALLBACKS still verifies, and `must_update`
rehashes it under SECRET_KEY on its next successful use.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.contrib.auth.hashers import BasePasswordHasher, mask_hash
from django.utils.translation import gettext_noop as _

ALGORITHM = "meshsite_hmac"
_LABEL = b"meshsite client secret v1"


@lru_cache(maxsize=16)
def _derived(secret_key: str) -> tuple[str, bytes]:
    """(key id, HMAC key) for one SECRET_KEY."""
    key = hmac.new(secret_key.encode(), _LABEL, hashlib.sha256).digest()
    key_id = hmac.new(key, b"key id", hashlib.sha256).hexdigest()[:8]
    return key_id, key


def _keys() -> list[tuple[str, bytes]]:
    return [_derived(key) for key in [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]]


def _digest(key: bytes, secret: str) -> str:
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


class HMACSecretHasher(BasePasswordHasher):
    """`meshsite_hmac$<key id>$<hex HMAC-SHA256>`. No salt: the secret is random already."""

    algorithm = ALGORITHM

    def salt(self) -> str:
        return _keys()[0][0]  # make_password wants a non-empty salt; the key id stands in

    def encode(self, password: str, salt: str) -> str:
        key_id, key = _keys()[0]
        return f"{ALGORITHM}${key_id}${_digest(key, password)}"

    def decode(self, encoded: str) -> dict[str, str]:
        algorithm, key_id, digest = encoded.split("$", 2)
        assert algorithm == self.algorithm
        return {"algorithm": algorithm, "salt": key_id, "hash": digest}

    def verify(self, password: str, encoded: str) -> bool:
        try:
            decoded = self.decode(encoded)
        except (ValueError, AssertionError):
            return False
        key_id, digest = decoded["salt"], decoded["hash"]
        keys = dict(_keys())
        # An unknown key id still costs one HMAC, so no answer is faster than another.
        key = keys.get(key_id, _keys()[0][1])
        return hmac.compare_digest(_digest(key, password), digest) and key_id in keys

    def must_update(self, encoded: str) -> bool:
        return self.decode(encoded)["salt"] != _keys()[0][0]

    def safe_summary(self, encoded: str) -> dict[Any, Any]:
        decoded = self.decode(encoded)
        return {
            _("algorithm"): decoded["algorithm"], _("key id"): decoded["salt"], _("hash"): mask_hash(decoded["hash"]),
        }

    def harden_runtime(self, password: str, encoded: str) -> None:
        pass  # one cost for every hash: there is no work factor to even out
