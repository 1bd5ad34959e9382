"""django-oauth-toolkit's validator, with two changes to how a client secret is checked.

- A hash made by an older hasher (PBKDF2, before client secrets moved to
  `hashers.HMACSecretHasher`) is replaced by the current one after a successful check, as
  Django upgrades a user's password on login. DOT itself calls check_password without a setter.
- An unknown client id does the same work as a known one with a wrong secret (one HMAC), so
  the time of an answer does not tell which client ids exist.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.hashers import check_password, make_password
from oauth2_provider.models import get_application_model
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.settings import oauth2_settings

# What an unknown client id's secret is checked against: a well-formed hash that no
# secret matches (its key id belongs to no key).
_NO_CLIENT = "meshsite_hmac$--------$" + "0" * 64


class MeshOAuth2Validator(OAuth2Validator):
    # DOT makes one validator per request (get_oauthlib_core), so this is per request.
    _secret_checked = False

    def _check_secret(self, provided_secret: str, stored_secret: str) -> bool:
        self._secret_checked = True
        preferred: str = oauth2_settings.CLIENT_SECRET_HASHER

        def upgrade(raw: str) -> None:
            # Conditional on the old hash: a concurrent upgrade or a new secret is not undone.
            get_application_model().objects.filter(client_secret=stored_secret).update(
                client_secret=make_password(raw, hasher=preferred)
            )

        try:
            return check_password(provided_secret, stored_secret, setter=upgrade, preferred=preferred)
        except ValueError:  # a stored secret that is no hash at all: DOT's plaintext case
            return super()._check_secret(provided_secret, stored_secret)

    def authenticate_client(self, request: Any, *args: Any, **kwargs: Any) -> bool:
        authenticated = super().authenticate_client(request, *args, **kwargs)
        if not authenticated and not self._secret_checked:
            # The client id was unknown (or absent), so no secret was checked: check one.
            self._check_secret(getattr(request, "client_secret", None) or "", _NO_CLIENT)
        return authenticated
