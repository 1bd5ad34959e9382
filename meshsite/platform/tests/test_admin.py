"""The admin deletes through the platform services: a key takes its OAuth2 client and tokens
with it, and an instance with keys is refused, as on the CLI."""

from django.contrib.admin.sites import site
from django.test import RequestFactory
from oauth2_provider.models import get_access_token_model, get_application_model

from meshsite.platform.models import ServiceInstance, ServiceKey
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
