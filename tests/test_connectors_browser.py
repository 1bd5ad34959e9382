"""Connector events' story in a real browser (Playwright driving Debian's Chromium) against a
live server and a real Celery worker, under uvicorn and Daphne: log in, entitle and create an
open-connectors instance, create a HubSpot connector instance whose callback URL is a real
local receiver, POST a provider's webhook of 45 objects to its events URL over HTTP, and see
the three notifications (20, 20, 5) delivered in the event log, the receiver having got them.
Any console error or uncaught page error fails the test; screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.test_cockpit_browser import CHROMIUM, ROOT, WAIT_MS, Story, reload_until, start_worker
from tests.test_live_server import SERVERS, LiveServer, live_server, stop
from tests.test_webhook_worker import Receiver

ARTIFACTS = ROOT / "test-artifacts" / "connectors"


@pytest.fixture(scope="module", params=SERVERS)
def cockpit(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Receiver, str]]:
    """A server with its static files collected, a Celery worker on the same database and
    broker, a callback receiver answering 200, and the admin's password."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not at {CHROMIUM} (.ci/run installs Debian's chromium)")
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env = {"MESH_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", "MESH_SWEEP_INTERVAL": "1"}
    directory = tmp_path_factory.mktemp(f"connectors-{request.param}")
    with live_server(directory, env, server=request.param, collect_static=True, with_instance=False) as server:
        password = (directory / "admin-password").read_text().strip()
        worker = start_worker(directory, server)
        try:
            yield server, receiver, password
        finally:
            stop(worker)
            receiver.released.set()
            receiver.shutdown()
            receiver.server_close()


def hubspot(count: int) -> list[dict[str, int | str]]:
    kinds = ["contact.creation", "contact.propertyChange", "company.deletion"]
    return [{"eventId": n, "subscriptionType": kinds[n % 3], "objectId": 1000 + n, "portalId": 62515,
             "occurredAt": 1767261600000 + n} for n in range(count)]


def test_connector_events_end_to_end_in_chromium(cockpit):
    server, receiver, password = cockpit
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            story = Story(page, server.base, server.server, ARTIFACTS)
            walk(story, page, server, receiver, password)
            problems = story.problems
        finally:
            browser.close()
    assert problems == []


def walk(story: Story, page: Page, server: LiveServer, receiver: Receiver, password: str) -> None:
    page.goto(server.base + "/")
    expect(page).to_have_url(re.compile(r"/login/"))
    page.fill("#id_username", "admin")
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Subaccount default")

    # The open-connectors entitlement and instance, then its application.
    page.click("nav.side >> text=Entitlements")
    page.select_option("#id_service", "open-connectors")
    page.fill("#id_plan", "standard")
    page.fill("#id_quota", "1")
    page.click("text=Add service plan")
    expect(page.locator('tr[data-entitlement="open-connectors/standard"]')).to_have_count(1)
    page.click("nav.side >> text=Instances and Subscriptions")
    page.click("text=Create")
    page.select_option("#id_plan", "open-connectors:standard")
    page.fill("#id_name", "oc1")
    page.click("button:has-text('Create')")
    expect(page.locator("h1")).to_contain_text("oc1")
    page.click("text=Go to application")
    expect(page.locator("h1")).to_contain_text("Open Connectors")
    page.click("table >> text=oc1")
    story.shot("connector-instances")

    # A HubSpot connector instance delivering to the receiver.
    page.fill("#id_name", "crm")
    page.select_option("#id_element", "hubspot")
    page.fill("#id_configuration", json.dumps({
        "event.notification.enabled": True, "event.vendor.type": "webhook",
        "event.notification.callback.url": receiver.url}))
    page.click("text=Create connector instance")
    expect(page.locator("h1")).to_contain_text("crm")
    events_url = page.locator("#events-url").inner_text()
    assert events_url.startswith(server.base + "/elements/api-v2/events/hubspot/")
    story.shot("connector")

    # The provider posts 45 objects; the worker normalizes and delivers three notifications.
    raw = hubspot(45)
    answer = httpx.post(events_url, content=json.dumps(raw), headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    pushes = receiver.wait_for(3, 3 * WAIT_MS / 1000)  # the worker may still be starting
    bodies = [json.loads(push.body) for push in pushes]
    assert sorted(len(body["message"]["events"]) for body in bodies) == [5, 20, 20]
    assert all(body["message"]["raw"] == raw for body in bodies)
    page.click("nav[aria-label='Connector instance'] >> text=Event log")
    rows = page.locator("tr[data-notification]")
    reload_until(page, lambda: page.locator("[data-state]:text-is('delivered')").count() == 3)
    expect(rows).to_have_count(3)
    assert rows.locator("[data-events]").all_inner_texts() == ["5", "20", "20"]
    story.shot("event-log")
    rows.first.locator("a").click()
    expect(page.locator("tr[data-event]")).to_have_count(5)
    expect(page.locator("tr[data-attempt]")).to_have_count(1)
    story.shot("notification")
    page.click("nav[aria-label='Connector instance'] >> text=Provider bodies")
    expect(page.locator("[data-status]")).to_have_text("processed")
    story.shot("bodies")
