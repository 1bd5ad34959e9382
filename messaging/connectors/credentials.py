"""Provider credentials: the configuration keys a connector instance keeps to call its
provider, their checks, the headers a poll sends, and the OAuth2 token requests.

Which keys an instance takes follows its element's `auth` style (elements.py): `apikey`
takes `api.key`, `basic` takes `username` and `password`, `oauth2` the `oauth.*` keys, `none`
none. The generic element (`any`) takes the keys of one style, whichever, and also
`api.key.header` / `api.key.prefix`, since no definition says where its key goes. A key of
another style is refused, naming it, rather than kept unused. The instance services seal the
secret ones (instances.SECRET_KEYS).

When the provider refuses an access token (401), the refresh token buys a new one at the
token URL: outside any transaction, through the SSRF guard. The new tokens are merged into
the secrets as they are under the row's lock, never from a copy read before the request,
so neither a concurrent save nor a concurrent refresh can write back a stale refresh token
over a rotated one. The instance saves take the same lock (instances._write).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.db import transaction

from meshsite import jsonlimit
from meshsite.errors import Invalid

from ..models import ConnectorInstance
from ..webhooks import netguard
from .elements import Element, element

API_KEY = "api.key"
API_KEY_HEADER = "api.key.header"
API_KEY_PREFIX = "api.key.prefix"
USERNAME = "username"
PASSWORD = "password"
ACCESS_TOKEN = "oauth.user.token"
REFRESH_TOKEN = "oauth.user.refresh_token"
CLIENT_ID = "oauth.api.key"
CLIENT_SECRET = "oauth.api.secret"
TOKEN_URL = "oauth.token.url"
REDIRECT_URL = "oauth.callback.url"

# The keys of each auth style; `api.key.header` and `api.key.prefix` only on an `any` element.
STYLE_KEYS: dict[str, tuple[str, ...]] = {
    "apikey": (API_KEY,),
    "basic": (USERNAME, PASSWORD),
    "oauth2": (ACCESS_TOKEN, REFRESH_TOKEN, CLIENT_ID, CLIENT_SECRET, TOKEN_URL, REDIRECT_URL),
}
_ANY_ONLY = {API_KEY_HEADER: "apikey", API_KEY_PREFIX: "apikey"}
_STYLE_OF = {**{key: style for style, keys in STYLE_KEYS.items() for key in keys}, **_ANY_ONLY}
KEYS = tuple(_STYLE_OF)
SECRET_KEYS = frozenset({API_KEY, PASSWORD, ACCESS_TOKEN, REFRESH_TOKEN, CLIENT_SECRET})

_LENGTHS = {API_KEY: 4096, API_KEY_PREFIX: 100, USERNAME: 256, PASSWORD: 1024, ACCESS_TOKEN: 8192,
            REFRESH_TOKEN: 8192, CLIENT_ID: 512, CLIENT_SECRET: 1024, REDIRECT_URL: 2048}
# A header value holding one would split the request (http.client refuses them late, at send).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
# Headers that frame the request or are the guard's: a key in one would break the request.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "accept-encoding"})
ERROR_LENGTH = 300


# --- the configuration keys -----------------------------------------------------------------


def _token_url(value: str) -> str:
    try:
        netguard.check_url_when_saved(value)
    except ValueError as error:  # InvalidURL, BlockedAddress
        raise Invalid(f"{TOKEN_URL}: {error}", extra={"key": TOKEN_URL}) from None
    return value


def value_check(key: str, value: Any) -> str:
    """The stored form of one credential key's value, or Invalid naming the key."""
    if not isinstance(value, str):
        raise Invalid(f"{key} must be a string", extra={"key": key})
    if key == TOKEN_URL:
        return _token_url(value) if value else value
    if key == API_KEY_HEADER:
        if value and (not _HEADER_NAME.fullmatch(value) or value.lower() in _RESERVED_HEADERS):
            raise Invalid(f"{key} must be an HTTP header name, not one that frames the request", extra={"key": key})
        return value
    if len(value) > _LENGTHS[key] or _CONTROL.search(value):
        raise Invalid(f"{key} must be at most {_LENGTHS[key]} characters, none a control character",
                      extra={"key": key})
    if key == USERNAME and ":" in value:
        raise Invalid(f"{USERNAME} must not contain ':' (HTTP Basic cannot carry it)", extra={"key": key})
    if key == REDIRECT_URL and value and urlsplit(value).scheme not in ("http", "https"):
        raise Invalid(f"{key} must be an http(s) URL", extra={"key": key})
    return value


def keys_check(element_key: str, present: Collection[str]) -> None:
    """The rules between credential keys: `present` are those set once the save is done."""
    definition = element(element_key)
    style = definition.auth if definition else "none"
    given = [key for key in KEYS if key in present]
    if style == "any":
        first = given[0] if given else ""
        other = next((key for key in given if _STYLE_OF[key] != _STYLE_OF[first]), None)
        if other:
            raise Invalid(f"{other} is a {_STYLE_OF[other]} credential, but {first} makes this instance's"
                          f" credentials {_STYLE_OF[first]}: the generic element takes one style", extra={"key": other})
    else:
        allowed = STYLE_KEYS.get(style, ())
        bad = next((key for key in given if key not in allowed), None)
        if bad:
            raise Invalid(f"{bad} is not a credential of element {element_key} (auth {style}, which takes"
                          f" {', '.join(allowed) or 'none'})", extra={"key": bad})
    if PASSWORD in present and USERNAME not in present:
        raise Invalid(f"{PASSWORD} requires {USERNAME}", extra={"key": PASSWORD})


# --- what a request carries ------------------------------------------------------------------


def _style(definition: Element, configuration: dict[str, Any], secrets: dict[str, str]) -> str:
    if definition.auth != "any":
        return definition.auth
    return next((_STYLE_OF[key] for key in KEYS if configuration.get(key) or secrets.get(key)), "none")


def auth_headers(instance: ConnectorInstance) -> dict[str, str]:
    """The header a request to the provider carries for the instance's credentials, if any."""
    definition = element(instance.element_key)
    if definition is None:
        return {}
    configuration, secrets = instance.configuration, instance.secret_values()
    style = _style(definition, configuration, secrets)
    if style == "apikey" and secrets.get(API_KEY):
        header = configuration.get(API_KEY_HEADER) or definition.api_key_header
        prefix = configuration.get(API_KEY_PREFIX, definition.api_key_prefix)
        return {header: prefix + secrets[API_KEY]}
    if style == "basic" and configuration.get(USERNAME):
        pair = f"{configuration[USERNAME]}:{secrets.get(PASSWORD, '')}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    if style == "oauth2" and secrets.get(ACCESS_TOKEN):
        return {"Authorization": "Bearer " + secrets[ACCESS_TOKEN]}
    return {}


def token_url(instance: ConnectorInstance) -> str:
    definition = element(instance.element_key)
    return str(instance.configuration.get(TOKEN_URL) or (definition.token_url if definition else ""))


def refreshable(instance: ConnectorInstance) -> bool:
    """Whether a refused access token can be refreshed: a refresh token, a client id and a
    token URL (a client secret is sent when set; public clients have none)."""
    definition = element(instance.element_key)
    return (definition is not None and _style(definition, instance.configuration, instance.secret_values()) == "oauth2"
            and bool(instance.secret(REFRESH_TOKEN) and instance.configuration.get(CLIENT_ID) and token_url(instance)))


# --- OAuth2 token requests -------------------------------------------------------------------


class TokenRequestFailed(Exception):
    """The token endpoint gave no token; `reason` is fit for a PollRun or a 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason[:ERROR_LENGTH]


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str  # "" when the provider keeps the one it was given


def _refusal(response: netguard.GuardedResponse) -> str:
    # RFC 6749 5.2: {"error", "error_description"}; the provider's words are what a tenant can act on.
    try:
        body = jsonlimit.loads(response.body)
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        described = body.get("error_description")
        return body["error"] + (f": {described}" if isinstance(described, str) and described else "")
    return response.body[:100].decode("utf-8", "replace")


def token_request(url: str, form: dict[str, str]) -> Tokens:
    """POST a token request (RFC 6749 form) through the SSRF guard, on a connection of its own:
    a refresh token is not sent twice on a kept-alive connection the provider closed."""
    where = urlsplit(url)._replace(query="").geturl()  # a query might carry something secret
    try:
        response = netguard.guarded_request(
            "POST", url, content=urlencode(form).encode(), timeout=settings.MESH_CONNECTOR_POLL_TIMEOUT,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
    except (ValueError, netguard.DeliveryError) as error:  # InvalidURL, BlockedAddress, connection
        raise TokenRequestFailed(f"token request to {where} failed: {error}") from None
    if response.status_code != 200:
        raise TokenRequestFailed(f"token endpoint {where} answered HTTP {response.status_code}: {_refusal(response)}")
    try:
        answer = jsonlimit.loads(response.body)
    except (ValueError, RecursionError):
        answer = None
    access = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(access, str) or not access or _CONTROL.search(access):
        raise TokenRequestFailed(f"token endpoint {where} answered without an access_token")
    refresh = answer.get("refresh_token") if isinstance(answer, dict) else None
    return Tokens(access, refresh if isinstance(refresh, str) and not _CONTROL.search(refresh) else "")


def _client(instance: ConnectorInstance) -> dict[str, str]:
    client = {"client_id": str(instance.configuration.get(CLIENT_ID, ""))}
    if instance.secret(CLIENT_SECRET):
        client["client_secret"] = instance.secret(CLIENT_SECRET)
    return client


def _tokens_store(instance_id: int, tokens: Tokens) -> ConnectorInstance:
    with transaction.atomic():
        row = ConnectorInstance.objects.select_for_update().filter(pk=instance_id).first()
        if row is None:
            raise TokenRequestFailed("the connector instance was deleted during the refresh")
        kept = row.secret_values()
        kept[ACCESS_TOKEN] = tokens.access_token
        if tokens.refresh_token:
            kept[REFRESH_TOKEN] = tokens.refresh_token
        row.secrets_set(kept)
        ConnectorInstance.objects.filter(pk=instance_id).update(secrets=row.secrets)
    return row


def _replaced(instance_id: int, sent: str) -> ConnectorInstance | None:
    """The instance, if its access token is no longer the one the provider refused."""
    fresh = ConnectorInstance.objects.filter(pk=instance_id).first()
    return fresh if fresh is not None and fresh.secret(ACCESS_TOKEN) not in ("", sent) else None


def access_token_refresh(*, instance: ConnectorInstance) -> ConnectorInstance:
    """The instance with a new access token, after the provider refused the one it holds;
    TokenRequestFailed when there is none to be had. No transaction may be open (a request)."""
    sent = instance.secret(ACCESS_TOKEN)
    # A refresh that finished since this poll read the row already has a token: use it,
    # rather than spend the refresh token again (a rotating provider may refuse a reuse).
    replaced = _replaced(instance.pk, sent)
    if replaced is not None:
        return replaced
    fresh = ConnectorInstance.objects.filter(pk=instance.pk).first() or instance
    if not refreshable(fresh):
        raise TokenRequestFailed("the access token was refused and no refresh is possible"
                                 f" (it needs {REFRESH_TOKEN}, {CLIENT_ID} and a token URL)")
    form = {"grant_type": "refresh_token", "refresh_token": fresh.secret(REFRESH_TOKEN), **_client(fresh)}
    try:
        tokens = token_request(token_url(fresh), form)
    except TokenRequestFailed:
        # Another refresh, with the same refresh token at the same moment, won: its token stands.
        replaced = _replaced(instance.pk, sent)
        if replaced is not None:
            return replaced
        raise
    return _tokens_store(instance.pk, tokens)


class ProviderAuth:
    """The credentials of one poll: the headers each request carries, and at most one refresh
    of an access token the provider refuses (a provider that refuses the new one as well
    would otherwise be asked for tokens on every page)."""

    def __init__(self, instance: ConnectorInstance) -> None:
        self.instance = instance
        self._headers: dict[str, str] | None = None
        self._refreshed = False
        self._failure = ""

    @property
    def headers(self) -> dict[str, str]:
        # Unsealed at the first request, where a poll's failure is caught and logged on its run.
        if self._headers is None:
            self._headers = auth_headers(self.instance)
        return self._headers

    def refused(self) -> bool:
        """After a 401: whether to send the request again, with a new token; TokenRequestFailed
        when this poll's refresh failed (now, or for an earlier object type)."""
        if self._failure:
            raise TokenRequestFailed(self._failure)
        if self._refreshed or not refreshable(self.instance):
            return False
        self._refreshed = True
        try:
            self.instance = access_token_refresh(instance=self.instance)
        except TokenRequestFailed as failure:
            self._failure = failure.reason
            raise
        self._headers = auth_headers(self.instance)
        return True


def code_exchange(*, element_key: str, configuration: dict[str, Any], code: Any) -> dict[str, str]:
    """The token keys an OAuth2 authorization code buys at the token URL (Open Connectors'
    `providerData.code` at creation), for a checked configuration; Invalid naming what is
    missing, or with the provider's reason. No transaction may be open (a request)."""
    if not isinstance(code, str) or not code or len(code) > 4096 or _CONTROL.search(code):
        raise Invalid("providerData.code must be an authorization code (text of at most 4096 characters)",
                      extra={"key": "providerData.code"})
    definition = element(element_key)
    if definition is None or definition.auth not in ("oauth2", "any"):
        raise Invalid(f"providerData.code needs an oauth2 element; {element_key} is not one",
                      extra={"key": "providerData.code"})
    url = str(configuration.get(TOKEN_URL) or definition.token_url)
    for key, value in ((CLIENT_ID, configuration.get(CLIENT_ID)), (REDIRECT_URL, configuration.get(REDIRECT_URL)),
                       (TOKEN_URL, url)):
        if not value:
            raise Invalid(f"providerData.code needs {key}", extra={"key": key})
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": str(configuration[REDIRECT_URL]),
            "client_id": str(configuration[CLIENT_ID])}
    if configuration.get(CLIENT_SECRET):
        form["client_secret"] = str(configuration[CLIENT_SECRET])
    try:
        tokens = token_request(url, form)
    except TokenRequestFailed as failure:
        raise Invalid(f"providerData.code was not exchanged: {failure.reason}",
                      extra={"key": "providerData.code"}) from None
    exchanged = {ACCESS_TOKEN: tokens.access_token}
    if tokens.refresh_token:
        exchanged[REFRESH_TOKEN] = tokens.refresh_token
    return exchanged
