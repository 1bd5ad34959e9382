"""Process Visibility instances and keys through the same CLI and cockpit as Event Mesh: the
key in the contract's form, the roles it grants, refusals of bad parameters."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from meshsite.platform.models import ServiceInstance, ServiceKey
from meshsite.testing import token_for

from ..models import RoleGrant
from ..roles import key_roles
from .factories import pv_instance


def _cli(*argv: str) -> dict:
    out = io.StringIO()
    call_command(*argv, stdout=out)
    return json.loads(out.getvalue())


def test_the_cli_creates_an_instance_and_a_key_in_the_contracts_form(subaccount, client, settings):
    created = _cli("create_service", "process-visibility", "standard", "pv1")
    key = _cli("create_service_key", "pv1", "sender")
    base = settings.MESH_PUBLIC_URL
    assert set(key) == {"uaa", "endpoints", "serviceinstanceid"}
    assert key["serviceinstanceid"] == created["guid"]
    assert key["endpoints"] == {"events": f"{base}/public/v1/events"}
    assert key["uaa"]["url"] == base and key["uaa"]["tokenendpoint"] == f"{base}/oauth/token"
    assert key["uaa"]["clientid"].startswith("sb-") and len(key["uaa"]["clientsecret"]) > 30
    # The secret works at the token endpoint, and the key may push events only.
    assert token_for(client, key["uaa"]["clientid"], key["uaa"]["clientsecret"])
    stored = ServiceKey.objects.get(name="sender")
    assert key_roles(key_id=stored.pk) == {"PVEventSender"}


def test_a_key_grants_the_roles_its_parameters_name(subaccount):
    _cli("create_service", "process-visibility", "standard", "pv1")
    _cli("create_service_key", "pv1", "ops", "-c", '{"roles": ["PVOperator", "PVAdmin", "PVOperator"]}')
    key = ServiceKey.objects.get(name="ops")
    assert key_roles(key_id=key.pk) == {"PVOperator", "PVAdmin"}
    assert set(RoleGrant.objects.values_list("instance_id", flat=True)) == {key.instance_id}


@pytest.mark.parametrize("parameters, words", [
    ('{"roles": ["PVRoot"]}', "Unknown role 'PVRoot'"),
    ('{"roles": []}', "non-empty list"),
    ('{"scopes": ["PVAdmin"]}', '{"roles": [...]}'),
    ('["PVAdmin"]', '{"roles": [...]}'),
    ("{nope", "-c is not valid JSON"),
])
def test_bad_key_parameters_are_refused_and_nothing_is_created(subaccount, parameters, words):
    _cli("create_service", "process-visibility", "standard", "pv1")
    with pytest.raises(CommandError, match=words.replace("[", r"\[").replace("{", r"\{")):
        call_command("create_service_key", "pv1", "k", "-c", parameters, stdout=io.StringIO())
    assert not ServiceKey.objects.exists() and not RoleGrant.objects.exists()


def test_an_event_mesh_key_takes_no_parameters(subaccount):
    _cli("create_service", "event-mesh", "default", "em", "-c", '{"namespace": "a/b/c"}')
    with pytest.raises(CommandError, match="event-mesh service keys take no parameters"):
        call_command("create_service_key", "em", "k", "-c", '{"roles": ["PVAdmin"]}', stdout=io.StringIO())
    assert not ServiceKey.objects.exists()


def test_the_cockpit_creates_a_key_with_roles_and_shows_it_once(person, subaccount):
    pv = pv_instance(subaccount)
    admin = person("ann", "administrator")
    page = admin.get(f"/subaccounts/{subaccount.pk}/instances/{pv.pk}/")
    assert b'name="parameters"' in page.content and b"Go to application" in page.content
    shown = admin.post(f"/subaccounts/{subaccount.pk}/instances/{pv.pk}/keys/new",
                       {"name": "ops", "parameters": '{"roles": ["PVOperator"]}'})
    assert shown.status_code == 201
    assert b"endpoints" in shown.content and b"/public/v1/events" in shown.content
    assert key_roles(key_id=ServiceKey.objects.get(name="ops").pk) == {"PVOperator"}
    refused = admin.post(f"/subaccounts/{subaccount.pk}/instances/{pv.pk}/keys/new",
                         {"name": "bad", "parameters": '{"roles": ["nobody"]}'})
    assert refused.status_code == 400 and b"Unknown role" in refused.content
    assert not ServiceKey.objects.filter(name="bad").exists()


def test_event_mesh_instance_pages_offer_no_key_parameters(person, subaccount):
    _cli("create_service", "event-mesh", "default", "em", "-c", '{"namespace": "a/b/c"}')
    em = ServiceInstance.objects.get(name="em")
    page = person("ann", "administrator").get(f"/subaccounts/{subaccount.pk}/instances/{em.pk}/")
    assert page.status_code == 200 and b'name="parameters"' not in page.content.split(b"keys/new")[-1]
