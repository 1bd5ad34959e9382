"""The admin writes through the platform services: a key takes its OAuth2 client and tokens
with it, an instance with keys is refused, as on the CLI; entitlements change through
`entitlement_put`; subaccounts, instances and keys are otherwise read-only there. The
database refuses a negative quota or an unknown service."""

import pytest
from django.contrib.admin.sites import site
from django.db import IntegrityError, transaction
from django.test import RequestFactory
from oauth2_provider.models import get_access_token_model, get_application_model

from meshsite.platform.models import Entitlement, Membership, ServiceInstance, ServiceKey, Subaccount
from meshsite.platform.services import subaccount_default
from meshsite.testing import make_instance, mesh_client_for


def test_deleting_a_key_in_the_admin_removes_its_client_and_tokens(db, fast_hashing):
    client = mesh_client_for(make_instance())
    key = ServiceKey.objects.get()
    site._registry[ServiceKey].delete_queryset(RequestFactory().get("/"), ServiceKey.objects.all())
    assert not ServiceKey.objects.filter(pk=key.pk).exists()
    assert not get_application_model().objects.exists()
    assert not get_access_token_model().objects.exists()
    assert client.call("GET", "/hub/rest/api/v1/management/messaging/queues").status_code == 401


def test_an_instance_with_keys_cannot_be_deleted_in_the_admin(db, fast_hashing, admin_user, client):
    instance = make_instance()
    mesh_client_for(instance)
    client.force_login(admin_user)
    url = f"/admin/platform/serviceinstance/{instance.pk}/delete/"
    response = client.post(url, {"post": "yes"})
    assert response.status_code == 403
    assert ServiceInstance.objects.filter(pk=instance.pk).exists()
    ServiceKey.objects.get().application.delete()  # keys gone: now it may go
    assert client.post(url, {"post": "yes"}).status_code == 302
    assert not ServiceInstance.objects.filter(pk=instance.pk).exists()


def _errors(response) -> str:
    assert response.status_code == 200, response.status_code
    html = response.content.decode()
    assert "errorlist" in html, html
    return html


def test_an_entitlement_quota_goes_through_the_service(db, admin_client):
    make_instance()
    make_instance("second", "x/y/z")
    entitlement = Entitlement.objects.get(service="event-mesh", plan="default")
    url = f"/admin/platform/entitlement/{entitlement.pk}/change/"
    _errors(admin_client.post(url, {"quota": "-1"}))
    assert "2 event-mesh/default instances are in use" in _errors(admin_client.post(url, {"quota": "1"}))
    assert Entitlement.objects.get(pk=entitlement.pk).quota == 10
    assert admin_client.post(url, {"quota": "2"}).status_code == 302
    assert Entitlement.objects.get(pk=entitlement.pk).quota == 2


def test_an_entitlement_in_use_cannot_be_deleted_but_a_new_one_can_be_added(db, admin_client):
    make_instance()
    entitlement = Entitlement.objects.get(service="event-mesh", plan="default")
    response = admin_client.post(f"/admin/platform/entitlement/{entitlement.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert Entitlement.objects.filter(pk=entitlement.pk).exists()
    add = "/admin/platform/entitlement/add/"
    subaccount = subaccount_default()
    _errors(admin_client.post(add, {"subaccount": subaccount.pk, "service": "nonsense", "plan": "x", "quota": "1"}))
    response = admin_client.post(add, {"subaccount": subaccount.pk, "service": "open-connectors", "plan": "trial",
                                       "quota": "1"})
    assert response.status_code == 302
    assert Entitlement.objects.filter(service="open-connectors", plan="trial", quota=1).exists()


def test_subaccounts_instances_and_keys_are_read_only_in_the_admin(db, fast_hashing, admin_client):
    instance = make_instance()
    client = mesh_client_for(instance)
    subaccount = instance.subaccount
    assert admin_client.get("/admin/platform/serviceinstance/add/").status_code == 403
    assert admin_client.get("/admin/platform/subaccount/add/").status_code == 403
    assert admin_client.get(f"/admin/platform/serviceinstance/{instance.pk}/change/").status_code == 200
    renamed = admin_client.post(f"/admin/platform/serviceinstance/{instance.pk}/change/", {"name": "renamed"})
    assert renamed.status_code == 403
    assert admin_client.post(f"/admin/platform/subaccount/{subaccount.pk}/change/", {"name": "x"}).status_code == 403
    key = ServiceKey.objects.get()
    assert admin_client.post(f"/admin/platform/servicekey/{key.pk}/change/", {"name": "x"}).status_code == 403
    assert (ServiceInstance.objects.get().name, Subaccount.objects.get().name) == ("myem", subaccount.name)
    assert client.call("GET", "/hub/rest/api/v1/management/messaging/queues").status_code == 200


@pytest.mark.parametrize(("model", "field", "value"), [
    (Entitlement, "quota", -1), (Entitlement, "service", "nonsense"), (ServiceInstance, "service", "nonsense"),
])
def test_the_database_refuses_an_impossible_platform_value(db, model, field, value):
    make_instance()
    with pytest.raises(IntegrityError), transaction.atomic():
        model.objects.filter(pk=model.objects.first().pk).update(**{field: value})


def test_roles_are_given_changed_and_taken_in_the_admin_through_the_services(db, admin_client, django_user_model):
    bob = django_user_model.objects.create_user(username="bob", password="pw")
    subaccount = subaccount_default()
    add = "/admin/platform/membership/add/"
    _errors(admin_client.post(add, {"user": bob.pk, "subaccount": subaccount.pk, "role": "owner"}))
    assert admin_client.post(add, {"user": bob.pk, "subaccount": subaccount.pk, "role": "viewer"}).status_code == 302
    membership = Membership.objects.get(user=bob)
    assert membership.role == "viewer"
    url = f"/admin/platform/membership/{membership.pk}/change/"
    assert admin_client.post(url, {"role": "administrator"}).status_code == 302
    membership.refresh_from_db()
    assert (membership.role, membership.subaccount_id) == ("administrator", subaccount.pk)
    listing = admin_client.get("/admin/platform/membership/?q=bob").content.decode()
    assert "bob" in listing
    assert admin_client.post(f"/admin/platform/membership/{membership.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Membership.objects.exists()
