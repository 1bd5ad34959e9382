"""The open-connectors service in the platform model: once entitled, created and keyed with
the same CLI as the other services, its key in the connectors' form."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from meshsite.platform.services import entitlement_put
from meshsite.testing import token_for


@pytest.fixture
def entitled(subaccount):
    entitlement_put(subaccount=subaccount, service="open-connectors", plan="standard", quota=1)
    return subaccount


def _cli(*argv: str) -> dict:
    out = io.StringIO()
    call_command(*argv, stdout=out)
    return json.loads(out.getvalue())


def test_without_the_entitlement_no_connectors_instance_is_created(subaccount):
    with pytest.raises(CommandError, match="no entitlement for open-connectors/standard"):
        call_command("create_service", "open-connectors", "standard", "oc1", stdout=io.StringIO())


def test_a_connectors_key_names_the_instance_api_and_its_secret_gets_a_token(entitled, settings):
    created = _cli("create_service", "open-connectors", "standard", "oc1")
    key = _cli("create_service_key", "oc1", "app")
    base = settings.MESH_PUBLIC_URL
    assert set(key) == {"uaa", "endpoints", "serviceinstanceid"}
    assert key["endpoints"] == {"api": f"{base}/elements/api-v2"}
    assert key["serviceinstanceid"] == created["guid"]
    assert key["uaa"]["tokenendpoint"] == f"{base}/oauth/token" and key["uaa"]["url"] == base
    assert token_for(Client(), key["uaa"]["clientid"], key["uaa"]["clientsecret"])


def test_the_quota_holds_for_connectors_instances_and_their_keys_take_no_parameters(entitled):
    _cli("create_service", "open-connectors", "standard", "oc1")
    with pytest.raises(CommandError, match="Quota exceeded"):
        call_command("create_service", "open-connectors", "standard", "oc2", stdout=io.StringIO())
    with pytest.raises(CommandError, match="take no parameters"):
        call_command("create_service_key", "oc1", "k", "-c", '{"roles": ["x"]}', stdout=io.StringIO())
