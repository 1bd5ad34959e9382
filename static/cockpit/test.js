// The Test tab: one JSON WebSocket (meshsite.v1) opened with a single-use ticket that the
// logged-in page asks for; publish to a queue or topic, consume a queue live (each message
// acknowledged as it is shown, and one more credited).
"use strict";
(function () {
  const config = JSON.parse(document.getElementById("test-config").textContent);
  const $ = (id) => document.getElementById(id);
  const csrf = () => document.cookie.split("; ").find((c) => c.startsWith("csrftoken="))?.split("=")[1] || "";
  const state = $("connection-state");
  let socket = null, refs = 0, consuming = null;
  const pending = new Map();

  const setState = (text, kind) => { state.textContent = text; state.className = "badge " + kind; };
  const send = (frame) => socket.send(JSON.stringify(frame));

  async function connect() {
    setState("connecting…", "pending");
    const response = await fetch(config.ticketUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify({ instance: config.instance }),
    });
    if (!response.ok) { setState("no ticket (" + response.status + ")", "failed"); return; }
    const ticket = await response.json();
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + ticket.url);
    socket.onmessage = (event) => receive(JSON.parse(event.data));
    socket.onclose = () => {
      setState("disconnected", "closed");
      $("publish-button").disabled = $("consume-button").disabled = $("stop-button").disabled = true;
      consuming = null;
      setTimeout(connect, 3000);
    };
  }

  function receive(frame) {
    if (frame.op === "welcome") {
      setState("connected", "open");
      $("publish-button").disabled = $("consume-button").disabled = false;
    } else if (frame.op === "published") {
      report(pending.get(frame.ref), true, "Published");
    } else if (frame.op === "subscribed") {
      $("consume-button").disabled = true; $("stop-button").disabled = false;
    } else if (frame.op === "unsubscribed") {
      $("consume-button").disabled = false; $("stop-button").disabled = true;
    } else if (frame.op === "message") {
      show(frame);
      if (frame.tag !== undefined) send({ op: "ack", sub: frame.sub, tag: frame.tag });
      send({ op: "credit", sub: frame.sub, credit: 1 });
    } else if (frame.op === "error") {
      if (frame.ref && pending.has(frame.ref)) report(pending.get(frame.ref), false, frame.message);
      else { $("publish-result").className = "check bad"; $("publish-result").textContent = frame.message; }
      if (frame.sub && frame.sub === consuming && !frame.ref) consuming = null;
    }
  }

  function report(what, ok, text) {
    const result = $("publish-result");
    result.className = "check " + (ok ? "ok" : "bad");
    result.textContent = ok ? `✓ ${text} to ${what}` : `✗ ${text}`;
  }

  function show(frame) {
    const item = document.createElement("li");
    const headers = document.createElement("div");
    headers.className = "headers";
    const props = frame.properties ? " · properties " + JSON.stringify(frame.properties) : "";
    headers.textContent = `${frame.to} · ${frame.contentType} · id ${frame.messageId} · delivery ${frame.deliveryCount}` +
      ` · ${frame.createdAt}${props}`;
    const body = document.createElement("pre");
    body.className = "body";
    body.textContent = frame.encoding === "base64" ? "(base64) " + frame.body : frame.body;
    item.append(headers, body);
    $("received").prepend(item);
  }

  $("publish-kind").addEventListener("change", (event) => {
    $("publish-queue-field").hidden = event.target.value !== "queue";
    $("publish-topic-field").hidden = event.target.value !== "topic";
  });

  $("publish-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const kind = $("publish-kind").value;
    const where = kind === "queue" ? $("publish-queue").value : $("publish-topic").value;
    const ref = String(++refs);
    pending.set(ref, `${kind} ${where}`);
    send({ op: "publish", ref, [kind]: where, body: $("publish-body").value,
      contentType: $("publish-type").value, qos: Number($("publish-qos").value) });
  });

  $("consume-form").addEventListener("submit", (event) => {
    event.preventDefault();
    consuming = "s" + (++refs);
    send({ op: "subscribe", sub: consuming, queue: $("consume-queue").value, credit: 10, qos: 1 });
  });

  $("stop-button").addEventListener("click", () => {
    if (consuming) send({ op: "unsubscribe", sub: consuming });
    consuming = null;
  });

  connect();
})();
