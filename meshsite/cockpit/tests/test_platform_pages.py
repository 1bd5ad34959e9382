"""The cockpit's platform pages through Django's test client: login, entitlements, instances
and subscriptions, service keys, members; a viewer's writes are 403 and change nothing, an
outsider's requests are 404, a refusal is shown beside its field and stores nothing."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from meshsite.platform.models import Entitlement, Membership, ServiceInstance, ServiceKey, Subaccount
from meshsite.platform.services import instance_create, service_key_create
from meshsite.testing import token_for

DESCRIPTOR = {"emname": "emname", "namespace": "a/b/c"}


def base(subaccount: Subaccount) -> str:
    return f"/subaccounts/{subaccount.pk}/"


def create_instance(admin: Client, subaccount: Subaccount, name: str = "emname", parameters: object = None,
                    plan: str = "event-mesh:default") -> Any:
    body = json.dumps(parameters if parameters is not None else {**DESCRIPTOR, "emname": name})
    return admin.post(base(subaccount) + "instances/new", {"plan": plan, "name": name, "parameters": body})


def test_anonymous_people_are_sent_to_the_login_page(db):
    for url in ("/", "/subaccounts/1/", "/subaccounts/1/entitlements/"):
        answer = Client().get(url)
        assert answer.status_code == 302 and answer["Location"].startswith("/login/?next=")
    assert Client().get("/login/").status_code == 200


def test_logging_in_leads_to_the_only_subaccount(subaccount):
    user = get_user_model().objects.create_user(username="ann", password="pw-ann")
    Membership.objects.create(user=user, subaccount=subaccount, role="viewer")
    client = Client()
    login = client.get("/login/")
    assert 'name="username"' in login.content.decode()
    assert client.post("/login/", {"username": "ann", "password": "wrong"}).status_code == 200  # form again
    answer = client.post("/login/", {"username": "ann", "password": "pw-ann"})
    assert answer.status_code == 302
    assert client.get("/")["Location"] == base(subaccount)
    overview = client.get(base(subaccount))
    assert overview.status_code == 200 and subaccount.name in overview.content.decode()


def test_someone_without_a_role_sees_no_subaccount(person, subaccount):
    outsider = person("olga")
    home = outsider.get("/")
    assert home.status_code == 200 and "no role in any subaccount" in home.content.decode()
    for url in ("", "entitlements/", "instances/", "instances/new", "members/"):
        assert outsider.get(base(subaccount) + url).status_code == 404
    assert outsider.post(base(subaccount) + "entitlements/", {"service": "event-mesh", "plan": "x",
                                                              "quota": 1}).status_code == 404
    assert not Entitlement.objects.filter(plan="x").exists()


def test_an_administrator_adds_changes_and_removes_an_entitlement(person, subaccount):
    admin = person("ada", "administrator")
    page = admin.get(base(subaccount) + "entitlements/").content.decode()
    assert "event-mesh" in page.lower() or "Event Mesh" in page
    answer = admin.post(base(subaccount) + "entitlements/", {"service": "open-connectors", "plan": "standard",
                                                             "quota": 2})
    assert answer.status_code == 302
    added = Entitlement.objects.get(subaccount=subaccount, service="open-connectors")
    assert added.quota == 2
    assert admin.post(base(subaccount) + f"entitlements/{added.pk}/quota", {"quota": 5}).status_code == 302
    added.refresh_from_db()
    assert added.quota == 5
    bad = admin.post(base(subaccount) + f"entitlements/{added.pk}/quota", {"quota": -1})
    assert bad.status_code == 400
    added.refresh_from_db()
    assert added.quota == 5
    assert admin.post(base(subaccount) + f"entitlements/{added.pk}/delete").status_code == 302
    assert not Entitlement.objects.filter(pk=added.pk).exists()


def test_a_quota_below_the_instances_in_use_is_refused_beside_the_row(person, subaccount):
    admin = person("ada", "administrator")
    assert create_instance(admin, subaccount).status_code == 302
    entitlement = Entitlement.objects.get(subaccount=subaccount, service="event-mesh", plan="default")
    answer = admin.post(base(subaccount) + f"entitlements/{entitlement.pk}/quota", {"quota": 0})
    assert answer.status_code == 400
    assert "cannot be lower" in answer.content.decode()
    entitlement.refresh_from_db()
    assert entitlement.quota == 10
    refused = admin.post(base(subaccount) + f"entitlements/{entitlement.pk}/delete")
    assert refused.status_code == 400 and "still use this entitlement" in refused.content.decode()


@pytest.mark.parametrize(("parameters", "field", "words"), [
    ("{not json", "parameters", "Not valid JSON"),
    ('{"emname": "other", "namespace": "a/b/c"}', "parameters", "must equal the instance name"),
    ('{"emname": "emname", "namespace": "abc"}', "parameters", "namespace"),
    ('{"emname": "emname", "namespace": "a/b/c", "nonsense": 1}', "parameters", "Unknown descriptor"),
])
def test_a_bad_descriptor_is_explained_next_to_the_editor_and_nothing_is_created(
        person, subaccount, parameters, field, words):
    admin = person("ada", "administrator")
    answer = admin.post(base(subaccount) + "instances/new",
                        {"plan": "event-mesh:default", "name": "emname", "parameters": parameters})
    assert answer.status_code == 400
    page = answer.content.decode()
    block = re.search(rf'data-field="{field}">(.*?)(data-field=|</form>)', page, re.S)
    assert block is not None and words in html.unescape(block.group(1)), page
    assert not ServiceInstance.objects.exists()


def test_the_descriptor_check_answers_as_the_user_types_and_stores_nothing(person, subaccount):
    viewer = person("vic", "viewer")  # checking changes nothing, so viewers may ask too
    url = base(subaccount) + "instances/parameters-check"
    good = viewer.post(url, {"plan": "event-mesh:default", "name": "emname", "parameters": json.dumps(DESCRIPTOR)})
    assert good.json()["ok"] is True and good.json()["normalized"]["namespace"] == "a/b/c"
    bad = viewer.post(url, {"plan": "event-mesh:default", "name": "emname", "parameters": '{"emname": 1'})
    assert bad.json()["ok"] is False and "line 1" in bad.json()["error"]
    assert not ServiceInstance.objects.exists()


def test_the_quota_and_a_duplicate_name_are_refused_inline(person, subaccount):
    admin = person("ada", "administrator")
    assert create_instance(admin, subaccount, plan="event-mesh:standard", parameters={},
                           name="event-mesh-app").status_code == 302
    second = create_instance(admin, subaccount, plan="event-mesh:standard", parameters={}, name="again")
    assert second.status_code == 400 and "Quota exceeded" in second.content.decode()
    assert create_instance(admin, subaccount).status_code == 302
    duplicate = create_instance(admin, subaccount, parameters={"emname": "emname", "namespace": "x/y/z"})
    assert duplicate.status_code == 400 and "already exists" in duplicate.content.decode()
    assert ServiceInstance.objects.count() == 2


def test_a_service_key_is_shown_once_rotated_and_deleted(person, subaccount, client):
    admin = person("ada", "administrator")
    create_instance(admin, subaccount)
    instance = ServiceInstance.objects.get()
    url = base(subaccount) + f"instances/{instance.pk}/"
    created = admin.post(url + "keys/new", {"name": "emkey"})
    assert created.status_code == 201 and created["Cache-Control"] == "no-store"
    html = created.content.decode()
    key_json, vcap = shown_json(html, "key-json"), shown_json(html, "vcap-json")
    oa2 = key_json["messaging"][1]["oa2"]
    assert vcap["enterprise-messaging"][0]["credentials"] == key_json
    assert token_for(client, oa2["clientid"], oa2["clientsecret"])  # the shown secret works
    key = ServiceKey.objects.get()
    shown_later = admin.get(url + f"keys/{key.pk}/").content.decode()
    assert oa2["clientsecret"] not in shown_later and "********" in shown_later
    rotated = admin.post(url + f"keys/{key.pk}/rotate")
    new_secret = shown_json(rotated.content.decode(), "key-json")["messaging"][1]["oa2"]["clientsecret"]
    assert new_secret != oa2["clientsecret"]
    assert client.post("/oauth/token", {"grant_type": "client_credentials", "client_id": oa2["clientid"],
                                        "client_secret": oa2["clientsecret"]}).status_code == 401
    assert token_for(client, oa2["clientid"], new_secret)
    duplicate = admin.post(url + "keys/new", {"name": "emkey"})
    assert duplicate.status_code == 400 and "already exists" in duplicate.content.decode()
    assert admin.post(url + f"keys/{key.pk}/delete").status_code == 302
    assert not ServiceKey.objects.exists()


def shown_json(page: str, element_id: str) -> Any:
    found = re.search(rf'<pre class="json" id="{element_id}">(.*?)</pre>', page, re.S)
    assert found is not None, page
    return json.loads(html.unescape(found.group(1)))


def test_an_instance_with_keys_is_not_deleted_and_deletion_needs_its_name(person, subaccount):
    admin = person("ada", "administrator")
    create_instance(admin, subaccount)
    instance = ServiceInstance.objects.get()
    service_key_create(instance=instance, name="k")
    url = base(subaccount) + f"instances/{instance.pk}/delete"
    assert admin.get(url).status_code == 200
    assert admin.post(url, {"confirm": "wrong"}).status_code == 400
    refused = admin.post(url, {"confirm": "emname"})
    assert refused.status_code == 400 and "still has service keys" in refused.content.decode()
    ServiceKey.objects.all().delete()
    assert admin.post(url, {"confirm": "emname"}).status_code == 302
    assert not ServiceInstance.objects.exists()


def test_a_viewer_reads_every_page_but_every_write_is_403_and_changes_nothing(person, subaccount):
    admin = person("ada", "administrator")
    create_instance(admin, subaccount)
    instance = ServiceInstance.objects.get()
    key = service_key_create(instance=instance, name="k").key
    viewer = person("vic", "viewer")
    root = base(subaccount)
    pages = ("", "entitlements/", "instances/", f"instances/{instance.pk}/", f"instances/{instance.pk}/keys/{key.pk}/",
             "members/")
    for url in pages:
        page = viewer.get(root + url)
        assert page.status_code == 200, url
        assert "Rotate secret</button>" not in page.content.decode() or url.endswith("/keys/")
    entitlement = Entitlement.objects.filter(subaccount=subaccount).order_by("pk")[0]
    writes = [
        ("entitlements/", {"service": "open-connectors", "plan": "standard", "quota": 1}),
        (f"entitlements/{entitlement.pk}/quota", {"quota": 0}),
        (f"entitlements/{entitlement.pk}/delete", {}),
        ("instances/new", {"plan": "event-mesh:default", "name": "v", "parameters": ""}),
        (f"instances/{instance.pk}/delete", {"confirm": "emname"}),
        (f"instances/{instance.pk}/keys/new", {"name": "v"}),
        (f"instances/{instance.pk}/keys/{key.pk}/rotate", {}),
        (f"instances/{instance.pk}/keys/{key.pk}/delete", {}),
        ("members/", {"username": "vic", "role": "administrator"}),
    ]
    secret_before = key.application.client_secret
    for url, data in writes:
        assert viewer.post(root + url, data).status_code == 403, url
    key.application.refresh_from_db()
    assert key.application.client_secret == secret_before
    assert ServiceInstance.objects.count() == 1 and ServiceKey.objects.count() == 1
    assert Membership.objects.get(user__username="vic").role == "viewer"
    assert not Entitlement.objects.filter(service="open-connectors").exists()


def test_another_subaccounts_objects_are_404(person, subaccount):
    admin = person("ada", "administrator")
    other = Subaccount.objects.create(name="other")
    Entitlement.objects.create(subaccount=other, service="event-mesh", plan="default", quota=1)
    foreign = instance_create(subaccount=other, service="event-mesh", plan="default", name="theirs",
                              parameters={"emname": "theirs", "namespace": "t/h/e"})
    foreign_key = service_key_create(instance=foreign, name="k").key
    foreign_entitlement = other.entitlements.get()
    root = base(subaccount)
    assert admin.get(root + f"instances/{foreign.pk}/").status_code == 404
    assert admin.post(root + f"instances/{foreign.pk}/delete", {"confirm": "theirs"}).status_code == 404
    assert admin.post(root + f"instances/{foreign.pk}/keys/{foreign_key.pk}/rotate").status_code == 404
    assert admin.post(root + f"entitlements/{foreign_entitlement.pk}/quota", {"quota": 0}).status_code == 404
    assert admin.get(base(other)).status_code == 404  # and their subaccount itself
    assert ServiceInstance.objects.filter(pk=foreign.pk).exists()
    foreign_entitlement.refresh_from_db()
    assert foreign_entitlement.quota == 1


def test_writes_need_the_csrf_token(person, subaccount):
    admin = person("ada", "administrator", enforce_csrf_checks=True)
    answer = admin.post(base(subaccount) + "entitlements/", {"service": "open-connectors", "plan": "s", "quota": 1})
    assert answer.status_code == 403
    assert not Entitlement.objects.filter(service="open-connectors").exists()


def test_administrators_give_and_take_roles(person, subaccount):
    admin = person("ada", "administrator")
    get_user_model().objects.create_user(username="bob", password="pw")
    assert admin.post(base(subaccount) + "members/", {"username": "bob", "role": "viewer"}).status_code == 302
    membership = Membership.objects.get(user__username="bob")
    assert membership.role == "viewer"
    unknown = admin.post(base(subaccount) + "members/", {"username": "nobody", "role": "viewer"})
    assert unknown.status_code == 400 and "No user" in unknown.content.decode()
    assert admin.post(base(subaccount) + f"members/{membership.pk}/delete").status_code == 302
    assert not Membership.objects.filter(user__username="bob").exists()


def test_failed_logins_are_limited_per_user_name_but_the_right_password_still_works(subaccount, settings):
    settings.MESH_TOKEN_FAILURES_PER_CLIENT = 3
    get_user_model().objects.create_user(username="ann", password="pw-ann")
    client = Client()
    for _ in range(3):
        assert client.post("/login/", {"username": "ann", "password": "guess"}).status_code == 200
    refused = client.post("/login/", {"username": "ann", "password": "guess"})
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert "Too many failed logins" in refused.content.decode()
    assert client.post("/login/", {"username": "ann", "password": "pw-ann"}).status_code == 302


def test_an_address_with_too_many_failures_is_refused_before_any_password_is_checked(subaccount, settings):
    settings.MESH_TOKEN_FAILURES_PER_ADDRESS = 2
    get_user_model().objects.create_user(username="ann", password="pw-ann")
    client = Client()
    for name in ("x", "y"):
        client.post("/login/", {"username": name, "password": "guess"})
    assert client.post("/login/", {"username": "ann", "password": "pw-ann"}).status_code == 429
