"""The per-process token cache: it saves the token lookup on repeated requests, and its
staleness is bounded by MESH_TOKEN_CACHE_SECONDS and by the token's own expiry."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from oauth2_provider.settings import oauth2_settings

from meshsite.platform.models import ServiceKey
from meshsite.testing import MANAGEMENT


def _list_queues(client):
    return client.call("GET", f"{MANAGEMENT}/queues")


def _token_queries(captured: CaptureQueriesContext) -> int:
    return sum("oauth2_provider_accesstoken" in query["sql"] for query in captured.captured_queries)


@pytest.mark.parametrize(("cache_seconds", "lookups"), [(60, 1), (0, 3)], ids=["cached", "uncached"])
def test_three_requests_with_one_token_look_it_up_once_when_cached(mesh, settings, cache_seconds, lookups):
    settings.MESH_TOKEN_CACHE_SECONDS = cache_seconds
    client = mesh()
    with CaptureQueriesContext(connection) as captured:
        for _ in range(3):
            assert _list_queues(client).status_code == 200
    assert _token_queries(captured) == lookups


def test_key_deleted_elsewhere_is_refused_once_the_cache_entry_ages_out(mesh, settings):
    settings.MESH_TOKEN_CACHE_SECONDS = 1
    client = mesh()
    assert _list_queues(client).status_code == 200
    # Deleted behind this process's back (as another process would): the cache still vouches
    # for the token until its entry is MESH_TOKEN_CACHE_SECONDS old, never longer.
    ServiceKey.objects.get(instance=client.instance).application.delete()
    assert _list_queues(client).status_code == 200
    time.sleep(1.1)
    assert _list_queues(client).status_code == 401


def test_cached_token_is_refused_once_it_expires(mesh, settings, monkeypatch):
    settings.MESH_TOKEN_CACHE_SECONDS = 600
    monkeypatch.setattr(oauth2_settings, "ACCESS_TOKEN_EXPIRE_SECONDS", 1)
    client = mesh()
    assert _list_queues(client).status_code == 200
    time.sleep(1.1)
    assert _list_queues(client).status_code == 401
