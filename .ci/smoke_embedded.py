"""Smoke pass of `make run` on the embedded default: start it, create an instance and a key
with the CLI, then token -> queue -> publish -> consume -> ack over real HTTP, the cockpit's
login page and its stylesheet, then Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from base64 import b64encode
from urllib.error import HTTPError

PORT = os.environ.get("SMOKE_PORT", "8097")
BASE = f"http://127.0.0.1:{PORT}"
PY = sys.executable


def manage(*args: str) -> str:
    return subprocess.run([PY, "manage.py", *args], check=True, capture_output=True, text=True).stdout


def call(method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(BASE + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def wait_until_up() -> None:
    for _ in range(120):
        try:
            urllib.request.urlopen(BASE + "/api/schema/", timeout=2)
            return
        except Exception:
            time.sleep(0.5)
    raise SystemExit("make run did not come up")


def smoke_process_visibility() -> None:
    """A PV instance and key, a scenario activated, an event pushed and processed on SQLite."""
    manage("create_service", "process-visibility", "standard", "pvsmoke")
    key = json.loads(manage("create_service_key", "pvsmoke", "k", "-c",
                            '{"roles": ["PVEventSender", "PVDeveloper", "PVAdmin", "PVOperator"]}'))
    basic = b64encode(f"{key['uaa']['clientid']}:{key['uaa']['clientsecret']}".encode()).decode()
    status, body, _ = call("GET", "/oauth/token?grant_type=client_credentials&response_type=token",
                           headers={"Authorization": f"Basic {basic}"})
    assert status == 200, body
    auth = {"Authorization": "Bearer " + json.loads(body)["access_token"], "Content-Type": "application/json"}
    definition = {"participants": [{"processDefinitionId": "p", "events": [{"eventType": "DONE"}]}],
                  "state": {"completingEvents": [{"participant": "p", "eventType": "DONE"}]}}
    scenarios = "/api/v1/pv/scenarios"
    body = json.dumps({"id": "s", "name": "Smoke", "definition": definition}).encode()
    assert call("POST", scenarios, body, auth)[0] == 201
    assert call("POST", f"{scenarios}/s/activate", b"", auth)[0] == 200
    event = {"processDefinitionId": "p", "processInstanceId": 1, "eventType": "DONE",
             "timestamp": "2026-01-01T00:00:00Z"}
    assert call("POST", "/public/v1/events", json.dumps(event).encode(), auth)[0] == 204
    assert call("POST", f"{scenarios}/s/process", b"", auth)[0] == 200
    status, body, _ = call("GET", f"{scenarios}/s/instances", headers=auth)
    assert status == 200 and [i["state"] for i in json.loads(body)["instances"]] == ["completed"], body


def main() -> None:
    server = subprocess.Popen(["make", "run", f"PORT={PORT}"], start_new_session=True)
    try:
        wait_until_up()
        manage("create_service", "event-mesh", "default", "smoke", "-c", '{"namespace": "s/m/k"}')
        key = json.loads(manage("create_service_key", "smoke", "k"))
        oa2 = key["messaging"][1]["oa2"]
        basic = b64encode(f"{oa2['clientid']}:{oa2['clientsecret']}".encode()).decode()
        status, body, _ = call("GET", "/oauth/token?grant_type=client_credentials&response_type=token",
                               headers={"Authorization": f"Basic {basic}"})
        assert status == 200, body
        auth = {"Authorization": "Bearer " + json.loads(body)["access_token"]}
        queue = "/hub/rest/api/v1/management/messaging/queues/s%2Fm%2Fk%2Fq"
        assert call("PUT", queue, headers=auth)[0] == 201
        rest = "/messagingrest/v1/queues/s%2Fm%2Fk%2Fq/messages"
        status, _, _ = call("POST", rest, b"smoke", {**auth, "x-qos": "1", "Content-Type": "text/plain"})
        assert status == 204, status
        status, body, headers = call("POST", rest + "/consumption", b"", {**auth, "x-qos": "1"})
        assert (status, body) == (200, b"smoke"), (status, body)
        message_id = {k.lower(): v for k, v in headers.items()}["x-message-id"]
        assert call("POST", f"{rest}/{message_id}/acknowledgement", b"", auth)[0] == 200
        smoke_process_visibility()
        status, page, _ = call("GET", "/")  # the cockpit: redirected to its login page
        assert status == 200 and b'name="username"' in page, (status, page[:200])
        stylesheet = page.split(b'rel="stylesheet" href="', 1)[1].split(b'"', 1)[0].decode()
        assert call("GET", stylesheet)[0] == 200, stylesheet  # collected and served by the app itself
        print("1 passed, 0 failed: embedded smoke (make run, CLI, token, queue, publish, consume, ack, "
              "Process Visibility events and processing, cockpit)")
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
