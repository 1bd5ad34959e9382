from collections.abc import Iterator

import pytest
from django.test.utils import override_settings

pytest_plugins = ["meshsite.testing"]


@pytest.fixture(autouse=True, scope="session")
def _meter_flushed_by_tests_only() -> Iterator[None]:
    # The meter's background flusher would write, on a connection of its own, counts made in
    # test transactions that never commit, and could hold the test database open at teardown;
    # tests that need the counts in the database call meter_flush() themselves.
    from messaging.metrics.meter import meter_discard

    with override_settings(MESH_METER_FLUSH_SECONDS=0):
        yield
    meter_discard()  # nothing left for the flush at exit, when the test database is gone
