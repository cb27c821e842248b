// Tripwire's pages where humans act: the approval inbox (/inbox) and the operator console
// (/console). Both poll their JSON endpoint (dashboards/human_loop.py); every change is a POST
// with the X-Tripwire-Request header, which the server requires and audits.
"use strict";

const PAGE = document.body.dataset.page;
let me = { name: "", role: "viewer" };
const RANK = { viewer: 0, approver: 1, operator: 2 };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

async function getJson(url) {
  const res = await fetch(url, { credentials: "same-origin" });
  if (res.status === 401) { location.href = `/login?next=${encodeURIComponent(location.pathname)}`; }
  if (!res.ok) throw new Error(`${res.status} ${await res.text()}`);
  return res.json();
}

async function post(url, body) {
  const res = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Tripwire-Request": "1" },
    body: JSON.stringify(body || {}),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(text || `${res.status}`);
  return text ? JSON.parse(text) : {};
}

function when(ms) {
  if (!ms) return "";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

function ago(ms, now) {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  return s < 120 ? `${s} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`;
}

function table(node, columns, rows, cell) {
  node.replaceChildren(
    el("thead", {}, el("tr", {}, ...columns.map(c => el("th", {}, c)))),
    el("tbody", {}, ...rows.map(r => el("tr", {}, ...columns.map(c => {
      const v = cell ? cell(r, c) : r[c];
      return v instanceof Node ? el("td", {}, v) : el("td", {}, v === null || v === undefined ? "" : String(v));
    })))));
}

async function showMe() {
  me = await getJson("/api/whoami");
  document.getElementById("me").replaceChildren(
    `${me.name} (${me.role}) `,
    el("form", { method: "post", action: "/logout" }, el("button", { type: "submit" }, "Log out")));
}

// --- inbox -----------------------------------------------------------------------------

const shown = new Set();

function requestCard(req, reasons, now) {
  const canDecide = RANK[me.role] >= RANK.approver;
  const why = canDecide ? null : "needs the approver role";
  const params = req.params || {};
  const evidence = req.run_id ? el("a", { href: `/#/evidence?run=${encodeURIComponent(req.run_id)}`, target: "_blank" }, "evidence of this run") : "no run";
  const reasonBox = el("div", { class: "decline-box", hidden: true },
    el("div", { class: "reasons" }, ...Object.entries(reasons).map(([code, label]) =>
      el("label", {}, el("input", { type: "radio", name: `reason-${req.request_id}`, value: code }), ` ${label}`))),
    el("input", { name: "reason_text", placeholder: "what is wrong (required for Other)", size: 40 }),
    el("button", { class: "danger confirm-decline", onclick: () => decline(req, reasonBox) }, "Decline with this reason"),
    el("span", { class: "error" }));
  const card = el("div", { class: "card request", "data-request-id": req.request_id, "data-agent": req.agent_id, "data-tool": req.tool },
    el("h3", {}, `${req.agent_id} wants to call ${req.tool} `, el("span", { class: `badge ${req.action_class}` }, req.action_class),
      " ", el("span", { class: "badge" }, req.kind)),
    req.rationale ? el("div", { class: "rationale" }, "Agent's reason: ", req.rationale) : null,
    el("table", { class: "params" }, el("tbody", {}, ...Object.entries(params).map(([k, v]) =>
      el("tr", { "data-param": k }, el("td", {}, k), el("td", {}, typeof v === "string" ? v : JSON.stringify(v)))))),
    el("dl", {},
      el("dt", {}, "Why asked"), el("dd", {}, `${req.trigger}: ${req.trigger_detail || ""}`),
      el("dt", {}, "Run"), el("dd", {}, `${req.run_id || "-"} step ${req.step ?? "-"} · `, evidence),
      el("dt", {}, "Agent"), el("dd", {}, [req.agent_version && `version ${req.agent_version}`, req.workflow && `workflow ${req.workflow}`,
        req.environment, req.owner && `owner ${req.owner}`].filter(Boolean).join(" · ") || "-"),
      el("dt", {}, "Asked"), el("dd", { class: "asked" }, `${ago(req.requested_at, now)} ago; expires in ${ago(now, req.expires_at)}`)),
    el("div", { class: "buttons" },
      el("button", { class: "approve", disabled: !canDecide, title: why, onclick: () => approve(req, card) }, req.kind === "proposal" ? "Accept" : "Approve"),
      el("button", { class: "decline open-decline", disabled: !canDecide, title: why, onclick: () => { reasonBox.hidden = !reasonBox.hidden; } }, "Decline…"),
      el("span", { class: "error" })),
    reasonBox);
  return card;
}

async function approve(req, card) {
  card.querySelectorAll("button").forEach(b => { b.disabled = true; });
  try {
    await post(`/api/inbox/${encodeURIComponent(req.request_id)}/approve`);
    card.dataset.state = "approved";
    await refreshInbox();
  } catch (err) {
    card.querySelector(".buttons .error").textContent = err.message;
    card.querySelectorAll("button").forEach(b => { b.disabled = false; });
  }
}

async function decline(req, box) {
  const picked = box.querySelector("input[type=radio]:checked");
  const error = box.querySelector(".error");
  if (!picked) { error.textContent = "pick a reason"; return; }
  try {
    await post(`/api/inbox/${encodeURIComponent(req.request_id)}/decline`,
      { reason_code: picked.value, reason_text: box.querySelector("input[name=reason_text]").value });
    await refreshInbox();
  } catch (err) {
    error.textContent = err.message;
  }
}

async function refreshInbox() {
  const data = await getJson("/api/inbox");
  const pending = document.getElementById("pending");
  const ids = new Set(data.pending.map(r => r.request_id));
  for (const card of [...pending.children]) {
    if (!ids.has(card.dataset.requestId)) { card.remove(); shown.delete(card.dataset.requestId); }
  }
  for (const req of data.pending) {
    if (shown.has(req.request_id)) {
      const asked = pending.querySelector(`[data-request-id="${CSS.escape(req.request_id)}"] .asked`);
      if (asked) asked.textContent = `${ago(req.requested_at, data.now)} ago; expires in ${ago(data.now, req.expires_at)}`;
      continue;
    }
    shown.add(req.request_id);
    pending.append(requestCard(req, data.reasons, data.now));
  }
  document.getElementById("pending-count").textContent = String(data.pending.length);
  pending.dataset.loaded = "1";
  table(document.getElementById("decided"),
    ["decided", "agent", "tool", "kind", "decision", "by", "waited", "reason"], data.decided,
    (r, c) => ({
      decided: when(r.decided_at), agent: r.agent_id, tool: r.tool, kind: r.kind,
      decision: r.approved ? (r.kind === "proposal" ? "accepted" : "approved") : "declined",
      by: r.approver, waited: `${(r.wait_ms / 1000).toFixed(1)} s`,
      reason: [r.reason_code, r.reason_text].filter(Boolean).join(": "),
    })[c]);
}

// --- console ---------------------------------------------------------------------------

let pendingAction = null;

function openConfirm(action, agent) {
  const dialog = document.getElementById("confirm");
  const form = document.getElementById("confirm-form");
  pendingAction = { action, agent };
  document.getElementById("confirm-title").textContent = `${action.label} ${agent.agent_id}?`;
  document.getElementById("confirm-what").textContent =
    `now ${agent.mode}${agent.since_ms ? " since " + when(agent.since_ms) : ""}: ${agent.reason}`;
  form.querySelectorAll(".field[data-field]").forEach(f => { f.hidden = !action.fields.includes(f.dataset.field); });
  form.elements.reason.value = "";
  form.elements.tool.value = "";
  document.getElementById("confirm-ok").textContent = `Confirm ${action.label.toLowerCase()}`;
  document.getElementById("confirm-error").textContent = "";
  dialog.showModal();
}

async function submitConfirm(ev) {
  const form = document.getElementById("confirm-form");
  if (ev.submitter && ev.submitter.value === "cancel") return;
  ev.preventDefault();
  const { action, agent } = pendingAction;
  const body = { agent_id: agent.agent_id, reason: form.elements.reason.value.trim() };
  if (!body.reason) { document.getElementById("confirm-error").textContent = "a reason is required"; return; }
  if (action.fields.includes("mode")) body.mode = form.elements.mode.value;
  if (action.fields.includes("duration")) body.duration = form.elements.duration.value;
  if (action.fields.includes("tool")) body.tool = form.elements.tool.value.trim();
  try {
    const res = await post(`/api/console/${action.name}`, body);
    document.getElementById("confirm").close();
    document.getElementById("console-status").textContent =
      `${action.label} of ${agent.agent_id} sent (command ${res.command_id}); the table updates when the worker applies it.`;
    await refreshConsole();
  } catch (err) {
    document.getElementById("confirm-error").textContent = err.message;
  }
}

// Of the guards the control's scope covers, how many were heard from recently; and how many
// heard from did not say what the scope selects on: counted apart, as `tripwire kill` does.
function heardOf(guards, obeyed) {
  const m = guards ? guards.heard_from : null;
  return m == null ? "" : obeyed ? ` of ${m} heard from recently` : ` (${m} heard from recently)`;
}
function unknownScope(guards) {
  return guards && guards.unknown_scope
    ? `; ${guards.unknown_scope} more heard from did not say their scope (not counted)` : "";
}

async function refreshConsole() {
  const data = await getJson("/api/console");
  const canAct = RANK[me.role] >= RANK.operator;
  table(document.getElementById("agents"), ["agent", "mode", "since", "why", "set by", "until", "earned autonomy", "controls (guards obeying)", "actions"], data.agents,
    (a, c) => ({
      agent: a.agent_id,
      mode: el("span", { class: `mode mode-${a.mode}`, "data-mode": a.mode }, a.mode),
      since: when(a.since_ms), why: a.reason,
      "set by": [a.source, a.rule].filter(Boolean).join(" / "),
      until: a.expires_at ? when(a.expires_at) : "",
      "earned autonomy": a.earned ? `${a.earned.mode} (${a.earned.rule}): ${a.earned.reason}` : "",
      // Each control in force with how many of the guards its scope covers acknowledged
      // applying it, of how many of them were heard from (ClickHouse control_acks), and the
      // slowest apply time.
      "controls (guards obeying)": el("span", {}, ...(a.controls || []).map(c => el("div", {
        class: "control", "data-scope": c.scope, "data-obeyed": c.acks ? String(c.acks.obeyed) : "0",
        "data-heard-from": c.guards && c.guards.heard_from != null ? String(c.guards.heard_from) : "",
      }, `${c.scope}: ${c.mode} — ` + (c.acks
        ? `obeyed by ${c.acks.obeyed} guard(s)` + heardOf(c.guards, true)
          + `, slowest ${c.acks.slowest_ms ?? "?"} ms` + unknownScope(c.guards)
        : "no guard acknowledged yet" + heardOf(c.guards, false) + unknownScope(c.guards))))),
      actions: el("span", {}, ...data.actions.map(action => el("button", {
        class: action.danger ? "danger" : "", "data-action": action.name, disabled: !canAct,
        title: canAct ? null : "needs the operator role", onclick: () => openConfirm(action, a),
      }, action.label))),
    })[c]);
  document.querySelectorAll("#agents tbody tr").forEach((tr, i) => { tr.dataset.agent = data.agents[i].agent_id; });
  document.getElementById("agents").dataset.loaded = "1";
  try {
    const audit = await getJson("/api/audit");
    table(document.getElementById("audit"), ["ts", "user", "role", "action", "target", "outcome", "detail"], audit.audit,
      (r, c) => (c === "ts" ? when(r.ts) : r[c]));
  } catch (err) { console.error("audit", err); }
}

// --- wiring ----------------------------------------------------------------------------

async function loop(fn, everyMs, statusId) {
  try {
    await fn();
    document.getElementById(statusId).textContent = "";
  } catch (err) {
    document.getElementById(statusId).textContent = `not available: ${err.message}`;
  }
  setTimeout(() => loop(fn, everyMs, statusId), everyMs);
}

showMe().then(() => {
  if (PAGE === "inbox") loop(refreshInbox, 500, "inbox-status");
  if (PAGE === "console") {
    document.getElementById("confirm-form").addEventListener("submit", submitConfirm);
    loop(refreshConsole, 1000, "console-status");
  }
});
