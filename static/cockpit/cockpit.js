// The cockpit's small behaviours. Every form works without this file; it adds confirmations,
// copy / download, and the as-you-type checks, each asking the server (which decides).
"use strict";
(function () {
  const csrf = () => (document.querySelector("input[name=csrfmiddlewaretoken]") || {}).value || "";
  const debounce = (fn, ms) => { let t; return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); }; };
  const say = (el, ok, text) => { el.textContent = text; el.className = "check " + (ok ? "ok" : "bad"); };

  document.addEventListener("submit", (event) => {
    const message = event.target.dataset && event.target.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });

  document.querySelectorAll("[data-copy]").forEach((button) => button.addEventListener("click", async () => {
    const text = document.querySelector(button.dataset.copy).textContent;
    try { await navigator.clipboard.writeText(text); button.textContent = "Copied"; }
    catch (error) { button.textContent = "Select the text to copy"; }
  }));

  document.querySelectorAll("[data-download]").forEach((button) => button.addEventListener("click", () => {
    const text = document.querySelector(button.dataset.download).textContent;
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    link.download = button.dataset.filename;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }));

  const instanceForm = document.getElementById("instance-form");
  if (instanceForm) {
    const templates = JSON.parse(document.getElementById("parameter-templates").textContent);
    const plan = instanceForm.querySelector("[name=plan]");
    const name = instanceForm.querySelector("[name=name]");
    const parameters = instanceForm.querySelector("[name=parameters]");
    const result = document.getElementById("parameters-check");
    const fill = () => {
      const template = templates[plan.value];
      const untouched = !parameters.value.trim() || parameters.dataset.filled === parameters.value;
      if (template && untouched) {
        const text = JSON.stringify(template, null, 2).replace('"NAME"', JSON.stringify(name.value || "NAME"));
        parameters.value = text; parameters.dataset.filled = text;
      } else if (!template && untouched) { parameters.value = ""; parameters.dataset.filled = ""; }
    };
    const check = debounce(async () => {
      const body = new URLSearchParams({ plan: plan.value, name: name.value, parameters: parameters.value });
      const response = await fetch(instanceForm.dataset.check, { method: "POST", body,
        headers: { "X-CSRFToken": csrf() }, credentials: "same-origin" });
      if (!response.ok) { say(result, false, "Could not check (" + response.status + ")"); return; }
      const answer = await response.json();
      say(result, answer.ok, answer.ok ? "✓ Valid" + (answer.normalized && answer.normalized.namespace
        ? " — namespace " + answer.normalized.namespace : "") : answer.error);
    }, 250);
    plan.addEventListener("change", () => { fill(); check(); });
    name.addEventListener("input", () => { fill(); check(); });
    parameters.addEventListener("input", check);
    fill();
  }

  const subscribeForm = document.getElementById("subscribe-form");
  if (subscribeForm) {
    const pattern = subscribeForm.querySelector("[name=pattern]");
    const topic = document.getElementById("try-topic");
    const result = document.getElementById("match-result");
    const check = debounce(async () => {
      if (!pattern.value) { result.textContent = ""; return; }
      const query = new URLSearchParams({ pattern: pattern.value, topic: topic.value });
      const answer = await (await fetch(subscribeForm.dataset.match + "?" + query, { credentials: "same-origin" })).json();
      if (!answer.ok) { say(result, false, answer.error); return; }
      const parts = [];
      if (answer.topic) parts.push(answer.topic.error ? answer.topic.error
        : (answer.topic.matches ? "✓ matches " : "✗ does not match ") + answer.topic.name);
      parts.push(answer.matches.length ? "Matches topics seen: " + answer.matches.join(", ") : "Matches none of the topics seen so far");
      say(result, true, parts.join(" · "));
    }, 200);
    pattern.addEventListener("input", check);
    topic.addEventListener("input", check);
  }

  const webhookForm = document.getElementById("webhook-form");
  if (webhookForm) {
    const auth = webhookForm.querySelector("[name=auth]");
    const groups = { basicAuth: ["user", "password"], oauth2: ["client_id", "client_secret", "token_url"] };
    const show = () => Object.entries(groups).forEach(([kind, names]) => names.forEach((field) => {
      webhookForm.querySelector(`[data-field=${field}]`).hidden = auth.value !== kind;
    }));
    auth.addEventListener("change", show);
    show();
  }
})();
