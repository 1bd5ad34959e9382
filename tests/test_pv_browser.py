"""Process Visibility's story in a real browser (Playwright driving Debian's Chromium) against a
live server and a real Celery worker with beat, under uvicorn and Daphne: the instance and a
service key made in the cockpit, a scenario created, edited as JSON and activated, events
pushed with the key (one of them bad), processed by the schedule and on demand, the workspace's
tiles drawn with the values sent, the instance list and one instance's timeline, and the bad
event corrected and re-submitted from Event Acquisition. Any console error or uncaught page
error fails the test; a screenshot of every page is kept under test-artifacts/ (git-ignored)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.test_cockpit_browser import CHROMIUM, ROOT, WAIT_MS, Story, reload_until, start_worker
from tests.test_live_server import SERVERS, LiveServer, live_server, stop
from visibility.tests.factories import order_to_cash

ARTIFACTS = ROOT / "test-artifacts" / "pv"
ORDERS = range(101, 113)  # a dozen orders: SO-101 … SO-112, each with its delivery DL-101 …
SHIPPED, DELIVERED = set(ORDERS[:8]), set(ORDERS[:5])  # 5 completed, 7 open


@pytest.fixture(scope="module", params=SERVERS)
def cockpit(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """A server with its static files collected, a Celery worker with beat processing every 2
    seconds on the same database and broker, and the admin's password."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not at {CHROMIUM} (.ci/run installs Debian's chromium)")
    env = {"MESH_PV_PROCESSING_INTERVAL": "2"}
    directory = tmp_path_factory.mktemp(f"pv-{request.param}")
    with live_server(directory, env, server=request.param, collect_static=True, with_instance=False) as server:
        password = (directory / "admin-password").read_text().strip()
        worker = start_worker(directory, server)
        try:
            yield server, password
        finally:
            stop(worker)


def test_process_visibility_end_to_end_in_chromium(cockpit):
    server, password = cockpit
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            story = Story(page, server.base, server.server, ARTIFACTS)
            workspace_url = walk(story, page, server, password)
            # The same session on a phone's width: the tiles stack, nothing overflows sideways.
            narrow = context.new_page()
            narrow.set_viewport_size({"width": 390, "height": 844})
            narrow_story = Story(narrow, server.base, server.server + "-narrow", ARTIFACTS)
            narrow.goto(workspace_url)
            expect(narrow.locator(".pv-tile")).to_have_count(5)
            expect(narrow.locator('.pv-tile[data-indicator="openInstances"] .pv-chart canvas')).to_have_count(1)
            narrow_story.shot("workspace")
            assert narrow.evaluate("document.documentElement.scrollWidth") <= 390
            problems = story.problems + narrow_story.problems
        finally:
            browser.close()
    assert problems == []


def events(now: datetime) -> list[dict[str, Any]]:
    """The dozen orders, deliveries first so that the timeline's order is the server's doing."""
    def at(n: int, minutes: int) -> str:
        return (now - timedelta(hours=3) + timedelta(minutes=n - 100 + minutes)).isoformat().replace("+00:00", "Z")

    def one(definition: str, pid: str, event_type: str, n: int, minutes: int) -> dict[str, Any]:
        return {"processDefinitionId": definition, "processInstanceId": pid, "eventType": event_type,
                "timestamp": at(n, minutes), "eventId": f"{pid}-{event_type}",
                "context": {"ORDER_ID": f"45{n}", "COUNTRY": "DE" if n % 2 else "FR", "AMOUNT": n}}
    batch = [one("delivery", f"DL-{n}", "DELIVERED", n, 90) for n in ORDERS if n in DELIVERED]
    batch += [one("delivery", f"DL-{n}", "SHIPPED", n, 60) for n in ORDERS if n in SHIPPED]
    batch += [one("order", f"SO-{n}", "APPROVED", n, 20) for n in ORDERS]
    batch += [one("order", f"SO-{n}", "CREATED", n, 0) for n in ORDERS]
    return batch


def walk(story: Story, page: Page, server: LiveServer, password: str) -> str:  # noqa: PLR0915
    base = server.base
    # Log in.
    page.goto(base + "/")
    expect(page).to_have_url(re.compile(r"/login/"))
    page.fill("#id_username", "admin")
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Subaccount default")
    story.shot("overview")

    # The Process Visibility instance (the default entitlement allows one), and a key for it.
    page.click("nav.side >> text=Instances and Subscriptions")
    page.click("text=Create")
    page.select_option("#id_plan", "process-visibility:standard")
    page.fill("#id_name", "pv1")
    story.shot("instance-new")
    page.click("button:has-text('Create')")
    expect(page.locator("h1")).to_contain_text("pv1")
    page.fill("#id_name", "sender")
    page.fill("#id_parameters", json.dumps({"roles": ["PVEventSender", "PVOperator"]}))
    story.shot("instance")
    page.click("text=Create service key")
    key = json.loads(page.locator("#key-json").inner_text())
    uaa, events_url = key["uaa"], key["endpoints"]["events"]
    assert events_url == base + "/public/v1/events"
    story.shot("service-key")

    # The application: a scenario created, given a full definition as JSON, activated.
    page.click("text=Back to pv1")
    page.click("text=Go to application")
    expect(page.locator("h1")).to_contain_text("Process Visibility")
    page.click("table >> text=pv1")
    expect(page.locator(".tabs a.on")).to_have_text("Scenarios")
    page.fill("#id_scenario_id", "o2c")
    page.fill("#id_name", "Order to cash")
    page.fill("#id_participants", "order, delivery")
    page.click("text=Create scenario")
    expect(page.locator("h2").first).to_contain_text("o2c")
    expect(page.locator("[data-state]")).to_have_text("draft")
    story.shot("scenario-draft")
    page.click("nav[aria-label=Scenario] >> text=JSON")
    page.fill("#definition", json.dumps(order_to_cash(), indent=2))
    page.click("text=Save draft")
    expect(page.locator("[data-refusal]")).to_have_count(0)
    story.shot("scenario-json")
    page.click("nav[aria-label=Scenario] >> text=Overview")
    expect(page.locator("#problems")).to_contain_text("None: the draft can be activated.")
    page.click("button:has-text('Activate')")
    expect(page.locator("[data-state]")).to_have_text("active")
    expect(page.locator("[data-version]")).to_have_text("1")
    story.shot("scenario-active")

    # Events pushed by an application with the key; one of them bad.
    token = httpx.post(uaa["tokenendpoint"], data={"grant_type": "client_credentials"},
                       auth=(uaa["clientid"], uaa["clientsecret"]), timeout=10)
    assert token.status_code == 200, token.text
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    now = datetime.now(UTC).replace(microsecond=0)
    batch = events(now)
    sent = httpx.post(events_url, json=batch, headers=bearer, timeout=10)
    assert sent.status_code == 204, sent.text
    bad = {"processDefinitionId": "order", "processInstanceId": "SO-113", "eventType": "CREATED",
           "timestamp": "yesterday", "eventId": "SO-113-CREATED", "context": {"ORDER_ID": "45113"}}
    refused = httpx.post(events_url, json=[bad], headers=bearer, timeout=10)
    assert refused.status_code == 400, refused.text

    # Processing by itself: the worker (activation's rebuild, then the schedule every 2 seconds
    # here) folds them into instances, whichever comes first.
    page.click("nav[aria-label=Scenario] >> text=Processing")
    created = page.locator("tr[data-run] [data-created]")
    reload_until(page, lambda: sum(int(cell) for cell in created.all_inner_texts()) == len(ORDERS))
    expect(page.locator("[data-instances]")).to_have_text(str(len(ORDERS)))
    assert sum(int(cell) for cell in created.all_inner_texts()) == len(ORDERS)
    story.shot("processing-scheduled")
    page.click("button:has-text('Process data now')")
    expect(page.locator("tr[data-run]", has_text="Process now")).to_have_count(1)
    story.shot("processing-manual")

    # The workspace: a tile per default indicator, each drawn, with the values sent.
    page.click(".tabs >> text=Workspace")  # the only active scenario: straight to its dashboard
    expect(page.locator("h1")).to_contain_text("Order to cash")
    tiles = page.locator(".pv-tile")
    expect(tiles).to_have_count(5)  # the four defaults and amount by country
    for indicator in ("openInstances", "completedByStatus", "cycleTime", "stepCycleTime", "amountByCountry"):
        tile = page.locator(f'.pv-tile[data-indicator="{indicator}"]')
        expect(tile.locator(".pv-chart")).to_have_attribute("data-drawn", "true")
        canvas = tile.locator(".pv-chart canvas").first
        expect(canvas).to_be_visible()
        assert canvas.bounding_box()["width"] > 0, indicator
    open_orders = len(ORDERS) - len(DELIVERED)
    assert values(page, "openInstances") == {"On Track": str(open_orders), "At Risk": "0", "Critical": "0"}
    assert values(page, "completedByStatus") == {"On Track": str(len(DELIVERED)), "At Risk": "0", "Critical": "0"}
    assert set(values(page, "stepCycleTime")) == {"Approval", "Shipping"}
    amounts = values(page, "amountByCountry")
    assert {k: float(v.replace(",", "")) for k, v in amounts.items()} == {
        "DE": float(sum(n for n in ORDERS if n % 2)), "FR": float(sum(n for n in ORDERS if not n % 2))}
    rows = page.locator("table.pv-instances tbody tr")
    expect(rows).to_have_count(len(ORDERS))
    story.shot("workspace")
    workspace_url = page.url
    page.select_option("#f-state", "completed")
    page.click("#instances >> button:has-text('Filter')")
    expect(rows).to_have_count(len(DELIVERED))
    story.shot("workspace-completed")

    # One instance: its timeline in business-time order with the events' names, its phases.
    page.click("table.pv-instances >> text=SO-101")
    expect(page.locator("h2").first).to_contain_text("SO-101")
    timeline = page.locator("table.pv-timeline tbody tr")
    expect(timeline).to_have_count(4)
    names = [row.locator("td").nth(1).inner_text() for row in timeline.all()]
    assert names == ["Order created", "Order approved", "Goods shipped", "Goods delivered"]
    times = [row.locator("td").first.inner_text() for row in timeline.all()]
    assert times == sorted(times)
    phases = page.locator("section", has=page.locator("h2", has_text="Phases")).locator("tbody th")
    expect(phases).to_have_text(["Approval", "Shipping"])
    story.shot("instance")

    # Event Acquisition: the counts, the bad event's failure corrected and re-submitted.
    page.click(".tabs >> text=Event Acquisition")
    expect(page.locator('[data-count="acquired"]')).to_have_text(str(len(batch)))
    expect(page.locator('[data-count="open_failures"]')).to_have_text("1")
    story.shot("acquisition")
    page.click("nav[aria-label='Event Acquisition'] >> text=Failures")
    failure = page.locator("tr[data-failure]")
    expect(failure).to_have_count(1)
    expect(failure).to_contain_text("timestamp")
    story.shot("failures")
    failure.locator("a").click()
    expect(page.locator("[data-state]")).to_have_attribute("data-state", "open")
    raw = page.locator("#raw")
    fixed = raw.input_value().replace('"yesterday"', json.dumps(now.isoformat().replace("+00:00", "Z")))
    assert fixed != raw.input_value()
    raw.fill(fixed)
    story.shot("failure")
    page.click("button:has-text('Correct and re-submit')")
    expect(page.locator("dd[data-state]")).to_have_attribute("data-state", "resubmitted")
    story.shot("failure-resubmitted")
    page.click(".crumb >> text=Failures")
    expect(page.locator('[data-count="open_failures"]')).to_have_text("0")
    page.click("nav[aria-label='Event Acquisition'] >> text=Events")
    resubmitted = page.locator("tr[data-event]", has_text="SO-113")
    expect(resubmitted).to_have_count(1)
    expect(page.locator('[data-count="acquired"]')).to_have_text(str(len(batch) + 1))
    # The schedule processes it like any other: a thirteenth order, open.
    reload_until(page, lambda: "processed" in resubmitted.inner_text())
    expect(resubmitted).to_contain_text("processed")
    story.shot("events")
    page.goto(workspace_url)
    expect(page.locator("table.pv-instances tbody tr")).to_have_count(len(ORDERS) + 1)
    assert values(page, "openInstances")["On Track"] == str(open_orders + 1)
    return workspace_url


def values(page: Page, indicator: str) -> dict[str, str]:
    """A tile's table of values (folded away once its chart is drawn, read all the same)."""
    rows = page.locator(f'.pv-tile[data-indicator="{indicator}"] .pv-values tbody tr')
    return {row.locator("th").text_content().strip(): row.locator("td").text_content().strip() for row in rows.all()}
