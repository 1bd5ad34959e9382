"""People of the cockpit tests: an administrator, a viewer and an outsider of one
subaccount, each with a logged-in Django test client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from meshsite.platform.models import Membership, Subaccount
from meshsite.platform.services import subaccount_default


@pytest.fixture
def subaccount(db: None, fast_hashing: None) -> Subaccount:
    return subaccount_default()


@pytest.fixture
def person(subaccount: Subaccount) -> Callable[..., Client]:
    """`person("ann", "administrator")` -> a client logged in as a new user with that role in
    the default subaccount (no role: an outsider)."""

    def factory(name: str, role: str | None = None, *, in_subaccount: Subaccount | None = None,
                **client_options: Any) -> Client:
        user = get_user_model().objects.create_user(username=name, password="pw")
        if role is not None:
            Membership.objects.create(user=user, subaccount=in_subaccount or subaccount, role=role)
        client = Client(**client_options)
        client.force_login(user)
        return client

    return factory
