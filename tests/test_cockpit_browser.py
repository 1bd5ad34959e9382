"""The seed's story in a real browser (Playwright driving Debian's Chromium) against a live
server and a real Celery worker, under uvicorn and Daphne: log in, entitlements, the Event Mesh
subscription and instance, a service key read from the page, a queue subscribed to a topic,
publish and consume live in the Test tab, the counters, a failing webhook seen in Monitor, and
a re-queue from the dead message queue. Any console error or uncaught page error fails the
test; a screenshot of every page is kept under test-artifacts/ (git-ignored)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.test_live_server import SERVERS, LiveServer, live_server, stop
from tests.test_webhook_worker import Receiver

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("MESH_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "cockpit"
QUEUE, DEAD, TOPIC = "a/b/c/orders", "a/b/c/dead", "a/b/c/sales/created"
WAIT_MS = 30_000  # an upper bound for the worker and the page, not a timing


@pytest.fixture(scope="module", params=SERVERS)
def cockpit(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Receiver, str]]:
    """A server with its static files collected, a Celery worker on the same database and
    broker, a webhook receiver that answers 500, and the admin's password."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not at {CHROMIUM} (.ci/run installs Debian's chromium)")
    receiver = Receiver()
    receiver.replies = [(500, 0.0)] * 1000
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env = {"MESH_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", "MESH_WEBHOOK_RETRY_SCHEDULE": "0.2",
           "MESH_SWEEP_INTERVAL": "1"}
    directory = tmp_path_factory.mktemp(f"cockpit-{request.param}")
    with live_server(directory, env, server=request.param, collect_static=True, with_instance=False) as server:
        password = (directory / "admin-password").read_text().strip()
        # With beat, as `make run` runs it: the sweep starts the failing webhook's retries.
        worker = start_worker(directory, server)
        try:
            yield server, receiver, password
        finally:
            stop(worker)
            receiver.released.set()
            receiver.shutdown()
            receiver.server_close()


def start_worker(directory: Path, server: LiveServer) -> subprocess.Popen:
    """A Celery worker with beat (as `make run` runs it) on the server's database, broker and
    settings; its log is directory/worker.log. Stop it with `stop`."""
    with (directory / "worker.log").open("wb") as out:
        return subprocess.Popen([str(Path(sys.executable).parent / "celery"), "-A", "meshsite", "worker",
                                 "--beat", "--schedule", str(directory / "celerybeat-schedule"),
                                 "--pool=threads", "--concurrency=2", "--loglevel=WARNING"],
                                cwd=ROOT, env=server.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


class Story:
    """A page with a screenshot per step, every console error and page error kept."""

    def __init__(self, page: Page, base: str, server: str, artifacts: Path = ARTIFACTS) -> None:
        self.page = page
        self.base = base
        self.problems: list[str] = []
        self.shots = artifacts / server
        self.shots.mkdir(parents=True, exist_ok=True)
        self.step = 0
        page.on("console", lambda m: self.problems.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("dialog", lambda dialog: dialog.accept())  # the confirm() before a delete or a purge

    def shot(self, name: str) -> None:
        self.step += 1
        self.page.screenshot(path=str(self.shots / f"{self.step:02d}-{name}.png"), full_page=True)


def test_the_seeds_story_end_to_end_in_chromium(cockpit):
    server, receiver, password = cockpit
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            story = Story(page, server.base, server.server)
            queues_url = walk(story, page, server, receiver, password)
            # The same session on a phone's width: the navigation folds above, nothing overflows.
            narrow = context.new_page()
            narrow.set_viewport_size({"width": 390, "height": 844})
            narrow_story = Story(narrow, server.base, server.server + "-narrow")
            narrow.goto(queues_url)
            expect(narrow.locator(f'tr[data-queue="{QUEUE}"]')).to_have_count(1)
            narrow_story.shot("queues")
            assert narrow.evaluate("document.documentElement.scrollWidth") <= 390
            problems = story.problems + narrow_story.problems
        finally:
            browser.close()
    assert problems == []


def walk(story: Story, page: Page, server: LiveServer, receiver: Receiver, password: str) -> str:  # noqa: PLR0915
    base = server.base
    # Log in.
    page.goto(base + "/")
    expect(page).to_have_url(re.compile(r"/login/"))
    story.shot("login")
    page.fill("#id_username", "admin")
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Subaccount default")
    story.shot("overview")

    # Entitlements: start from none for Event Mesh, add both plans, raise a quota.
    page.click("nav.side >> text=Entitlements")
    for plan in ("event-mesh/default", "event-mesh/standard"):
        page.locator(f'tr[data-entitlement="{plan}"] button.danger').click()
        expect(page.locator(f'tr[data-entitlement="{plan}"]')).to_have_count(0)
    for plan, quota in (("standard", "1"), ("default", "1")):
        page.select_option("#id_service", "event-mesh")
        page.fill("#id_plan", plan)
        page.fill("#id_quota", quota)
        page.click("text=Add service plan")
        expect(page.locator(f'tr[data-entitlement="event-mesh/{plan}"]')).to_have_count(1)
    row = page.locator('tr[data-entitlement="event-mesh/default"]')
    row.locator("input[name=quota]").fill("2")
    row.locator("text=Save").click()
    expect(page.locator('tr[data-entitlement="event-mesh/default"] input[name=quota]')).to_have_value("2")
    story.shot("entitlements")

    # The Event Mesh subscription, then the instance with a descriptor checked as it is typed.
    page.click("nav.side >> text=Instances and Subscriptions")
    page.click("text=Create")
    page.select_option("#id_plan", "event-mesh:standard")
    page.fill("#id_name", "event-mesh-app")
    page.click("button:has-text('Create')")
    expect(page.locator("h1")).to_contain_text("event-mesh-app")
    page.click("nav.side >> text=Instances and Subscriptions")
    story.shot("instances")
    page.click("text=Create")
    page.select_option("#id_plan", "event-mesh:default")
    page.fill("#id_name", "emname")
    expect(page.locator("#parameters-check")).to_contain_text("Valid — namespace a/b/c")
    parameters = page.locator("#id_parameters")
    descriptor = parameters.input_value()
    assert json.loads(descriptor)["emname"] == "emname"
    parameters.fill(descriptor.replace('"a/b/c"', '"a/b"'))
    expect(page.locator("#parameters-check")).to_contain_text("namespace")
    expect(page.locator("#parameters-check")).to_have_class(re.compile("bad"))
    story.shot("descriptor-error")
    parameters.fill(descriptor)
    expect(page.locator("#parameters-check")).to_contain_text("Valid")
    page.click("button:has-text('Create')")
    expect(page.locator("h1")).to_contain_text("emname")

    # A service key: read its JSON from the page and get a token with it.
    page.fill("#id_name", "emkey")
    page.click("text=Create service key")
    key = json.loads(page.locator("#key-json").inner_text())
    vcap = json.loads(page.locator("#vcap-json").inner_text())
    assert vcap["enterprise-messaging"][0]["credentials"] == key
    oa2 = key["messaging"][1]["oa2"]
    assert key["messaging"][1]["protocol"] == ["httprest"] and key["messaging"][1]["uri"] == base
    token = httpx.post(oa2["tokenendpoint"], data={"grant_type": "client_credentials"},
                       auth=(oa2["clientid"], oa2["clientsecret"]), timeout=10)
    assert token.status_code == 200, token.text
    story.shot("service-key")

    # The Event Mesh application: queues, a dead message queue, a topic subscription.
    page.click("nav.side >> text=Event Mesh")
    page.click("table >> text=emname")
    for name in (DEAD, QUEUE):
        page.fill("#id_name", name)
        page.click("text=Create queue")
        expect(page.locator("main h2").first).to_contain_text(name)
        page.click(".tabs >> text=Queues")
    story.shot("queues")
    page.click(f"table >> text={QUEUE}")
    page.fill("#id_pattern", "a/b/c/sales/+")
    page.fill("#try-topic", TOPIC)
    expect(page.locator("#match-result")).to_contain_text(f"✓ matches {TOPIC}")
    page.click("button:has-text('Subscribe')")
    expect(page.locator("td code", has_text="a/b/c/sales/+")).to_have_count(1)
    story.shot("queue")

    # Test: consume the queue live, publish to the topic, see the message with its headers.
    page.click(".tabs >> text=Test")
    expect(page.locator("#connection-state")).to_have_text("connected")
    page.select_option("#consume-queue", QUEUE)
    page.click("#consume-button")
    expect(page.locator("#stop-button")).to_be_enabled()
    page.select_option("#publish-kind", "topic")
    expect(page.locator("#publish-queue-field")).to_be_hidden()
    page.fill("#publish-topic", TOPIC)
    page.fill("#publish-body", '{"id": 1}')
    page.click("#publish-button")
    expect(page.locator("#publish-result")).to_contain_text(f"Published to topic {TOPIC}")
    received = page.locator("#received li").first
    expect(received).to_contain_text('{"id": 1}')
    expect(received.locator(".headers")).to_contain_text(f"topic:{TOPIC} · application/json")
    story.shot("test-consumed")
    page.click("#stop-button")
    expect(page.locator("#consume-button")).to_be_enabled()

    # Publish with nobody consuming: the queue's count goes from 0 to 1, with its size.
    page.click(".tabs >> text=Queues")
    expect(page.locator(f'tr[data-queue="{QUEUE}"] [data-count]')).to_have_text("0")
    page.click(".tabs >> text=Test")
    expect(page.locator("#connection-state")).to_have_text("connected")
    page.select_option("#publish-kind", "queue")
    page.select_option("#publish-queue", QUEUE)
    page.fill("#publish-body", '{"id": 2}')
    page.click("#publish-button")
    expect(page.locator("#publish-result")).to_contain_text(f"Published to queue {QUEUE}")
    page.click(".tabs >> text=Queues")
    expect(page.locator(f'tr[data-queue="{QUEUE}"] [data-count]')).to_have_text("1")
    expect(page.locator(f'tr[data-queue="{QUEUE}"] [data-size]')).to_have_text("9\u00a0bytes")
    story.shot("counted")

    # A failing webhook: one delivery allowed, then the dead message queue.
    page.click(f"table >> text={QUEUE}")
    page.fill("#id_dead_msg_queue", DEAD)
    page.fill("#id_max_redelivery_count", "1")
    page.click("text=Save attributes")
    expect(page.locator("#id_max_redelivery_count")).to_have_value("1")
    page.click(".tabs >> text=Webhooks")
    page.fill("#id_name", "a/b/c/failing")
    page.select_option("#id_queue", QUEUE)
    page.fill("#id_endpoint", receiver.url)
    page.check("#id_exempt_handshake")
    page.click("text=Create webhook")
    expect(page.locator("#webhook-status")).to_have_text("Active")
    story.shot("webhook")
    assert receiver.wait_for(1, WAIT_MS / 1000), "the worker never pushed"
    page.click(".tabs >> text=Monitor")
    failures = page.locator("#failures tbody")
    dead_count = page.locator(f'tr[data-queue="{DEAD}"] [data-count]')
    # Its one redelivery (0.2 s after the first failure) fails too, and then it is dead-lettered.
    reload_until(page, lambda: receiver.url in failures.inner_text() and dead_count.inner_text() == "1")
    expect(dead_count).to_have_text("1")
    expect(failures).to_contain_text(receiver.url)
    expect(failures).to_contain_text("500")
    # The chart: the two publishes of the story, counted per minute by the server processes.
    chart = page.locator("#rates-chart")
    reload_until(page, lambda: chart.get_attribute("data-total") == "2")
    expect(chart).to_have_attribute("data-total", "2")
    expect(chart.locator("canvas")).to_have_count(1)
    story.shot("monitor")

    # Pause the webhook (so the re-queued message stays to be seen), then re-queue from the DMQ.
    page.click("#failures >> text=a/b/c/failing")
    page.click("button:has-text('Pause')")
    expect(page.locator("#webhook-status")).to_have_text("Paused")
    page.click(".tabs >> text=Monitor")
    page.click(f"a[href$='dead-letters/{DEAD}']")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody")).to_contain_text(QUEUE)
    story.shot("dead-letters")
    page.click("text=Re-queue all")
    expect(page.locator(".notice")).to_contain_text("1 message re-queued")
    page.click(".tabs >> text=Queues")
    expect(page.locator(f'tr[data-queue="{QUEUE}"] [data-count]')).to_have_text("1")
    expect(page.locator(f'tr[data-queue="{DEAD}"] [data-count]')).to_have_text("0")
    story.shot("requeued")
    queues_url = page.url
    page.click(".tabs >> text=Webhooks")
    expect(page.locator('tr[data-webhook="a/b/c/failing"]')).to_contain_text("Paused")
    story.shot("webhooks")
    page.click("nav.side >> text=Members")
    expect(page.locator("h1")).to_have_text("Members")
    story.shot("members")
    return queues_url


def reload_until(page: Page, condition: Callable[[], bool]) -> None:
    """Reload a server-rendered page until it shows what the worker is doing meanwhile."""
    for _ in range(WAIT_MS // 500):
        if condition():
            return
        page.wait_for_timeout(500)
        page.reload()
