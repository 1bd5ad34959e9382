"""The cf-CLI-like management commands: JSON on stdout, CommandError (stderr, exit status 1)
on refusal, descriptor validation, quotas, and the key JSON of the wire contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.test import Client as DjangoClient

from meshsite.platform.keys import MASK
from meshsite.platform.models import Entitlement, ServiceInstance, ServiceKey
from meshsite.platform.services import subaccount_default
from meshsite.testing import MANAGEMENT, mesh_client_for, token_for
from messaging.models import Message, Queue

pytestmark = pytest.mark.usefixtures("db", "fast_hashing")

BASE_DIR = Path(django_settings.BASE_DIR)


def run(*args: str) -> Any:
    """Run a command and return its stdout parsed as JSON."""
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return json.loads(out.getvalue())


def create(name: str = "myem", namespace: str = "a/b/c", **descriptor: Any) -> Any:
    return run("create_service", "event-mesh", "default", name, "-c",
               json.dumps({"emname": name, "namespace": namespace, **descriptor}))


def refused(*args: str) -> str:
    with pytest.raises(CommandError) as error:
        call_command(*args, stdout=StringIO(), stderr=StringIO())
    return str(error.value)


def oa2_blocks(key: dict) -> list[dict]:
    return [key["management"][0]["oa2"], *(block["oa2"] for block in key["messaging"])]


# create_service


def test_create_service_prints_the_instance_with_normalized_descriptor():
    printed = create("myem", "a/b/c")
    instance = ServiceInstance.objects.get()
    assert printed["name"] == "myem" == instance.name
    assert printed["guid"] == str(instance.id)
    assert (printed["service"], printed["plan"]) == ("event-mesh", "default")
    assert printed["parameters"]["namespace"] == "a/b/c" == instance.namespace
    assert printed["parameters"]["rules"]["queueRules"]["publishFilter"] == ["a/b/c/*"]
    assert printed["parameters"]["options"] == {"management": True, "messagingrest": True, "messaging": True}


def test_create_service_without_emname_takes_the_instance_name():
    printed = run("create_service", "event-mesh", "default", "named", "-c", '{"namespace": "x/y/z"}')
    assert printed["parameters"]["emname"] == "named"


@pytest.mark.parametrize(("descriptor", "fragment"), [
    ({"emname": "myem", "namespace": "a/b"}, "namespace"),
    ({"emname": "myem", "namespace": "a/b/c/d"}, "namespace"),
    ({"emname": "myem", "namespace": "a/b-x/c"}, "namespace"),
    ({"emname": "myem", "namespace": "abcdefghij/abcdefghij/abcde"}, "namespace"),
    ({"emname": "myem"}, "namespace"),
    ({"emname": "other", "namespace": "a/b/c"}, "emname"),
    ({"emname": "myem", "namespace": "a/b/c", "colour": "red"}, "colour"),
    ({"emname": "myem", "namespace": "a/b/c", "options": {"webhooks": True}}, "webhooks"),
    ({"emname": "myem", "namespace": "a/b/c", "options": {"management": "yes"}}, "management"),
    ({"emname": "myem", "namespace": "a/b/c",
      "rules": {"topicRules": {"publishFilter": ["a/*/c"]}}}, "rules.topicRules.publishFilter"),
    ({"emname": "myem", "namespace": "a/b/c",
      "rules": {"queueRules": {"subscribeFilter": ["a/b c/*"]}}}, "rules.queueRules.subscribeFilter"),
    ({"emname": "myem", "namespace": "a/b/c", "rules": {"eventRules": {}}}, "eventRules"),
])
def test_create_service_refuses_an_invalid_descriptor_and_stores_nothing(descriptor, fragment):
    message = refused("create_service", "event-mesh", "default", "myem", "-c", json.dumps(descriptor))
    assert fragment in message
    assert ServiceInstance.objects.count() == 0


def test_create_service_refuses_malformed_json():
    message = refused("create_service", "event-mesh", "default", "myem", "-c", "{namespace: a/b/c")
    assert "JSON" in message
    assert ServiceInstance.objects.count() == 0


def test_create_service_refuses_a_descriptor_that_is_not_an_object():
    assert "object" in refused("create_service", "event-mesh", "default", "myem", "-c", '["a/b/c"]')
    assert ServiceInstance.objects.count() == 0


def test_create_service_refuses_a_duplicate_instance_name():
    create("myem", "a/b/c")
    message = refused("create_service", "event-mesh", "default", "myem", "-c",
                      '{"emname": "myem", "namespace": "d/e/f"}')
    assert "already exists" in message
    assert list(ServiceInstance.objects.values_list("namespace", flat=True)) == ["a/b/c"]


def test_create_service_refuses_a_namespace_already_in_use():
    create("first", "a/b/c")
    message = refused("create_service", "event-mesh", "default", "second", "-c",
                      '{"emname": "second", "namespace": "a/b/c"}')
    assert "a/b/c" in message and "Namespace" in message
    assert list(ServiceInstance.objects.values_list("name", flat=True)) == ["first"]


def test_create_service_enforces_the_entitlement_quota():
    Entitlement.objects.filter(subaccount=subaccount_default(), service="event-mesh", plan="default").update(quota=2)
    create("em1", "a/a/a")
    create("em2", "b/b/b")
    message = refused("create_service", "event-mesh", "default", "em3", "-c", '{"emname": "em3", "namespace": "c/c/c"}')
    assert "Quota exceeded" in message and "2" in message
    assert ServiceInstance.objects.count() == 2


def test_quota_frees_up_when_an_instance_is_deleted():
    Entitlement.objects.filter(subaccount=subaccount_default(), service="event-mesh", plan="default").update(quota=1)
    create("em1", "a/a/a")
    assert "Quota" in refused("create_service", "event-mesh", "default", "em2", "-c", '{"namespace": "b/b/b"}')
    run("delete_service", "em1")
    assert create("em2", "b/b/b")["name"] == "em2"


def test_create_service_refuses_a_plan_without_entitlement():
    message = refused("create_service", "event-mesh", "premium", "myem", "-c", '{"namespace": "a/b/c"}')
    assert "entitlement" in message
    assert ServiceInstance.objects.count() == 0


# create_service_key / service_key


def test_create_service_key_prints_the_contract_key_json():
    instance_guid = create("myem", "a/b/c")["guid"]
    key = run("create_service_key", "myem", "k1")
    instance = ServiceInstance.objects.get()
    assert key["namespace"] == "a/b/c"
    assert key["serviceinstanceid"] == instance_guid
    assert key["xsappname"] == instance.xsappname and key["xsappname"]
    assert len(key["management"]) == 1
    amqp, rest = key["messaging"]
    assert amqp["protocol"] == ["amqp10ws"] and amqp["broker"] == {"type": "sapmgw"}
    assert amqp["uri"].startswith(("wss://", "ws://")) and amqp["uri"].endswith("/protocols/amqp10ws")
    assert rest["protocol"] == ["httprest"] and rest["broker"] == {"type": "saprestmgw"}
    application = ServiceKey.objects.get().application
    for oa2 in oa2_blocks(key):
        assert set(oa2) == {"clientid", "clientsecret", "tokenendpoint", "granttype"}
        assert oa2["clientid"] == application.client_id
        assert oa2["granttype"] == "client_credentials"
        assert oa2["clientsecret"] not in ("", MASK)
    assert len({oa2["clientsecret"] for oa2 in oa2_blocks(key)}) == 1


def test_printed_secret_works_at_the_token_endpoint():
    create()
    key = run("create_service_key", "myem", "k1")
    oa2 = key["messaging"][1]["oa2"]
    http = DjangoClient()
    token = token_for(http, oa2["clientid"], oa2["clientsecret"])
    assert http.get(f"{MANAGEMENT}/queues", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


def test_every_uri_in_the_key_uses_the_public_url(settings):
    settings.MESH_PUBLIC_URL = "https://mesh.example.com"
    create()
    key = run("create_service_key", "myem", "k1")
    amqp, rest = key["messaging"]
    assert key["management"][0]["uri"] == "https://mesh.example.com"
    assert rest["uri"] == "https://mesh.example.com"
    assert amqp["uri"] == "wss://mesh.example.com/protocols/amqp10ws"
    for oa2 in oa2_blocks(key):
        assert oa2["tokenendpoint"] == "https://mesh.example.com/oauth/token"


def test_plain_http_public_url_gives_ws_and_keeps_a_path_prefix(settings):
    settings.MESH_PUBLIC_URL = "http://mesh.internal:8080/em"
    create()
    key = run("create_service_key", "myem", "k1")
    assert key["messaging"][0]["uri"] == "ws://mesh.internal:8080/em/protocols/amqp10ws"
    assert key["messaging"][1]["uri"] == "http://mesh.internal:8080/em"
    assert key["management"][0]["oa2"]["tokenendpoint"] == "http://mesh.internal:8080/em/oauth/token"


def test_create_service_key_vcap_wraps_the_key(settings):
    settings.MESH_PUBLIC_URL = "https://mesh.example.com"
    create()
    vcap = run("create_service_key", "myem", "k1", "--vcap")
    assert list(vcap) == ["enterprise-messaging"]
    (entry,) = vcap["enterprise-messaging"]
    assert entry["label"] == "enterprise-messaging"
    assert entry["plan"] == "default"
    assert entry["name"] == "myem"
    credentials = entry["credentials"]
    assert credentials["namespace"] == "a/b/c"
    assert credentials["messaging"][0]["uri"] == "wss://mesh.example.com/protocols/amqp10ws"
    secret = credentials["management"][0]["oa2"]["clientsecret"]
    assert secret != MASK
    token_for(DjangoClient(), credentials["management"][0]["oa2"]["clientid"], secret)


def test_create_service_key_refuses_duplicate_and_unknown_instance():
    create()
    run("create_service_key", "myem", "k1")
    assert "already exists" in refused("create_service_key", "myem", "k1")
    assert "not found" in refused("create_service_key", "nosuch", "k1")
    assert ServiceKey.objects.count() == 1


def test_service_key_masks_the_secret():
    create()
    created = run("create_service_key", "myem", "k1")
    secret = created["management"][0]["oa2"]["clientsecret"]
    out = StringIO()
    call_command("service_key", "myem", "k1", stdout=out)
    assert secret not in out.getvalue()
    shown = json.loads(out.getvalue())
    for oa2 in oa2_blocks(shown):
        assert oa2["clientsecret"] == MASK
    for block in (shown, created):
        for oa2 in oa2_blocks(block):
            oa2.pop("clientsecret")
    assert shown == created


def test_service_key_vcap_masks_the_secret():
    create()
    secret = run("create_service_key", "myem", "k1")["management"][0]["oa2"]["clientsecret"]
    out = StringIO()
    call_command("service_key", "myem", "k1", "--vcap", stdout=out)
    assert secret not in out.getvalue()
    credentials = json.loads(out.getvalue())["enterprise-messaging"][0]["credentials"]
    assert all(oa2["clientsecret"] == MASK for oa2 in oa2_blocks(credentials))


def test_service_key_of_unknown_key_is_refused():
    create()
    assert "not found" in refused("service_key", "myem", "nosuch")


# delete_service_key / delete_service / services


def test_delete_service_refuses_while_keys_exist_then_works():
    create()
    run("create_service_key", "myem", "k1")
    message = refused("delete_service", "myem")
    assert "service keys" in message
    assert ServiceInstance.objects.filter(name="myem").exists()
    assert run("delete_service_key", "myem", "k1") == {"deleted": {"instance": "myem", "key": "k1"}}
    assert ServiceKey.objects.count() == 0
    assert run("delete_service", "myem") == {"deleted": {"instance": "myem"}}
    assert ServiceInstance.objects.count() == 0


def test_delete_service_removes_its_queues_and_messages():
    create()
    client = mesh_client_for(ServiceInstance.objects.get(name="myem"))
    assert client.put_queue("a/b/c/q1").status_code == 201
    assert client.publish("queues", "a/b/c/q1", b"left behind").status_code == 204
    run("delete_service_key", "myem", "key")
    run("delete_service", "myem")
    assert not Queue.objects.exists()
    assert not Message.objects.exists()


def test_deleted_key_secret_no_longer_gets_a_token():
    create()
    oa2 = run("create_service_key", "myem", "k1")["management"][0]["oa2"]
    run("delete_service_key", "myem", "k1")
    response = DjangoClient().post("/oauth/token", {"grant_type": "client_credentials", "client_id": oa2["clientid"],
                                                    "client_secret": oa2["clientsecret"]})
    assert response.status_code == 401


def test_delete_of_unknown_instance_or_key_is_refused():
    create()
    assert "not found" in refused("delete_service", "nosuch")
    assert "not found" in refused("delete_service_key", "myem", "nosuch")


def test_services_lists_instances_with_their_keys():
    assert run("services") == []
    create("zeta", "z/z/z")
    create("alpha", "a/a/a")
    run("create_service_key", "zeta", "k2")
    run("create_service_key", "zeta", "k1")
    listed = run("services")
    assert [i["name"] for i in listed] == ["alpha", "zeta"]
    assert listed[0]["keys"] == [] and listed[1]["keys"] == ["k1", "k2"]
    assert listed[1]["namespace"] == "z/z/z"
    assert listed[1]["guid"] == str(ServiceInstance.objects.get(name="zeta").id)
    assert all((i["service"], i["plan"]) == ("event-mesh", "default") for i in listed)


# A real process: exit status and stderr as a shell user sees them.


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["MESH_VAR_DIR"] = str(tmp_path)
    env["DJANGO_SETTINGS_MODULE"] = "meshsite.settings"
    migrate = manage(env, "migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stderr
    assert (tmp_path / "meshsite.sqlite3").exists()
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_process_exits_non_zero_with_the_error_on_stderr(sqlite_env):
    failed = manage(sqlite_env, "create_service", "event-mesh", "default", "myem", "-c", '{"namespace": "bad"}')
    assert failed.returncode != 0
    assert "namespace" in failed.stderr
    assert failed.stdout.strip() == ""
    ok = manage(sqlite_env, "create_service", "event-mesh", "default", "myem", "-c", '{"namespace": "a/b/c"}')
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["name"] == "myem"
    again = manage(sqlite_env, "create_service", "event-mesh", "default", "myem", "-c", '{"namespace": "d/e/f"}')
    assert again.returncode != 0
    assert "already exists" in again.stderr
    assert not ServiceInstance.objects.exists()  # the test database was not touched
