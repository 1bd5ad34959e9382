"""What one step does: a request through the SSRF guard, or a publish to the Event Mesh
instance bound to the triggering connector instance. Each answers a StepOutcome and never
raises for what a tenant's formula or its receiver can cause."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from meshsite.errors import MeshError

from ...services.messages import Outgoing, message_publish_to_topic
from ...webhooks import netguard
from ..models import ConnectorInstance
from .template import TemplateError, render

# A request's whole budget (s), from connecting to its last body byte.
REQUEST_TIMEOUT = 15.0
# How much of a response body a step's result keeps (characters), and up to what size a JSON
# body is kept parsed too, for later steps to refer to (`${steps.<name>.json.id}`).
BODY_EXCERPT = 2000
JSON_KEPT = 16 * 1024
BODY_METHODS = ("POST", "PUT", "PATCH")


@dataclass
class StepOutcome:
    succeeded: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _response_result(response: netguard.GuardedResponse) -> dict[str, Any]:
    result: dict[str, Any] = {"status": response.status_code,
                              "body": response.body[:BODY_EXCERPT * 4].decode("utf-8", "replace")[:BODY_EXCERPT]}
    if not response.truncated and len(response.body) <= JSON_KEPT:
        with contextlib.suppress(ValueError):
            result["json"] = json.loads(response.body)
    return result


def _request_args(properties: dict[str, Any], context: dict[str, Any]) -> tuple[str, str, dict[str, str], bytes | None]:
    method = str(properties["method"])
    url = render(properties["url"], context)
    if not isinstance(url, str):
        raise TemplateError("url does not render to a string")
    headers = {str(k): str(v) for k, v in render(properties.get("headers", {}), context).items()}
    if "body" in properties:
        body: Any = render(properties["body"], context)
    elif method in BODY_METHODS:
        body = context["trigger"]
    else:
        return method, url, headers, None
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    return method, url, headers, _json_bytes(body)


def request_step(properties: dict[str, Any], context: dict[str, Any], session: netguard.Session) -> StepOutcome:
    try:
        method, url, headers, content = _request_args(properties, context)
        response = session.request(method, url, headers=headers, content=content, timeout=REQUEST_TIMEOUT)
    except TemplateError as error:
        return StepOutcome(False, error=str(error))
    except netguard.DeliveryError as error:
        return StepOutcome(False, {"reason": error.reason}, error=str(error)[:500])
    except ValueError as error:  # InvalidURL, BlockedAddress: refused before any connection
        return StepOutcome(False, {"reason": "blocked address"}, error=str(error)[:500])
    result = _response_result(response)
    if 200 <= response.status_code < 300:
        return StepOutcome(True, result)
    return StepOutcome(False, result, error=f"the receiver answered {response.status_code}")


def publish_step(properties: dict[str, Any], context: dict[str, Any], connector: ConnectorInstance) -> StepOutcome:
    if connector.event_mesh is None:
        return StepOutcome(False, error=f"connector instance {connector.pk} has no Event Mesh instance bound to "
                                        "publish to")
    try:
        topic = render(properties["topic"], context)
        payload = render(properties["payload"], context) if "payload" in properties else context["trigger"]
        outgoing = Outgoing(payload=_json_bytes(payload), content_type="application/json", qos=1)
        queues = message_publish_to_topic(instance=connector.event_mesh, topic=str(topic), outgoing=outgoing)
    except TemplateError as error:
        return StepOutcome(False, error=str(error))
    except MeshError as error:  # a topic the instance's rules refuse, a full queue, ...
        return StepOutcome(False, {"topic": str(topic)}, error=error.message[:500])
    return StepOutcome(True, {"topic": topic, "queues": queues})
