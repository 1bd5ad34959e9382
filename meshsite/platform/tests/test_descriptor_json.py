"""create_service -c: a descriptor nested past MESH_MAX_JSON_DEPTH is a CommandError (exit
status 1, one line), not a RecursionError traceback, and creates no instance."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from meshsite.platform.models import ServiceInstance

pytestmark = pytest.mark.usefixtures("db")


def test_deeply_nested_descriptor_is_refused_and_creates_nothing():
    deep = '{"emname": "deep", "namespace": "a/b/c", "resources": ' + "[" * 1000 + "]" * 1000 + "}"
    with pytest.raises(CommandError, match="deeper than 32"):
        call_command("create_service", "event-mesh", "default", "deep", "-c", deep, stdout=StringIO())
    assert not ServiceInstance.objects.filter(name="deep").exists()


def test_descriptor_within_the_limit_is_created():
    descriptor = {"emname": "ok", "namespace": "a/b/c", "resources": {"units": [[{"x": 1}]]}}
    out = StringIO()
    call_command("create_service", "event-mesh", "default", "ok", "-c", json.dumps(descriptor), stdout=out)
    assert json.loads(out.getvalue())["parameters"]["resources"] == descriptor["resources"]
