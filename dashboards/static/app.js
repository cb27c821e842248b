// Tripwire dashboards: every panel is the named query of the same name, fetched as JSON
// from /api/panels/<name> and drawn here with plotly (served locally). The view and its
// filters live in the URL hash, so a view can be linked, and reload keeps it.
"use strict";

const MODE_COLORS = {
  autonomous: "#1a7f37", approve_to_act: "#c29b0c", suggest_only: "#b7791f",
  read_only: "#c53030", halted: "#7a1010",
};
const SERIES_COLORS = ["#2456c7", "#c53030", "#b7791f", "#1a7f37", "#7c3aed", "#0e7490",
  "#db2777", "#4b5563", "#65a30d", "#ea580c", "#0891b2", "#9333ea"];
const FILTER_KEYS = ["range", "agent", "workflow", "environment", "refresh"];

let dashboards = null;
let refreshTimer = null;
let generation = 0;

function parseHash() {
  const [path, query] = (location.hash.replace(/^#\/?/, "") || "safety").split("?");
  return { view: path || "safety", params: new URLSearchParams(query || "") };
}

function setHash(view, params) {
  const q = params.toString();
  const next = `#/${view}${q ? "?" + q : ""}`;
  if (location.hash !== next) location.hash = next; else route();
}

function filterParams() {
  const form = document.getElementById("filters");
  const p = new URLSearchParams();
  for (const key of FILTER_KEYS) {
    const v = form.elements[key].value;
    if (v) p.set(key, v);
  }
  return p;
}

function apiQuery(params) {
  const p = new URLSearchParams();
  for (const key of ["range", "agent", "workflow", "environment"]) {
    if (params.get(key)) p.set(key, params.get(key));
  }
  return p.toString();
}

async function getJson(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${res.status} ${await res.text()}`);
  return res.json();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function plotTime(iso) { return iso ? iso.replace("T", " ").replace("Z", "") : iso; }

function humanize(name) {
  return name.replace(/_pct$/, " %").replace(/_usd$/, " (USD)").replace(/_ms$/, " (ms)")
    .replace(/_s$/, " (s)").replace(/_/g, " ");
}

function formatCell(name, value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string" && /^\d{4}-\d\d-\d\dT/.test(value)) return plotTime(value).slice(0, 19);
  if (typeof value === "number" && !Number.isInteger(value)) return value.toLocaleString(undefined, { maximumFractionDigits: 4 });
  if (typeof value === "number") return value.toLocaleString();
  if (Array.isArray(value)) return value.join(", ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// --- routing ---------------------------------------------------------------------------

async function route() {
  const { view, params } = parseHash();
  const form = document.getElementById("filters");
  for (const key of FILTER_KEYS) {
    if (params.has(key)) form.elements[key].value = params.get(key);
  }
  document.querySelectorAll("nav a").forEach(a => a.classList.toggle("active", a.dataset.view === view));
  document.getElementById("dashboard").hidden = view === "evidence";
  document.getElementById("evidence").hidden = view !== "evidence";
  schedule(params);
  if (view === "evidence" && params.has("scope")) {
    await showScopeEvidence(params.get("scope"), params.get("since") || "", params.get("until") || "");
  } else if (view === "evidence") {
    await showEvidence(params.get("run") || "");
  } else {
    await loadFilterOptions(params);
    await showDashboard(view, params);
  }
}

function schedule(params) {
  clearInterval(refreshTimer);
  const seconds = Number(params.get("refresh") || document.getElementById("filters").elements.refresh.value);
  const { view } = parseHash();
  if (seconds > 0 && view !== "evidence") {
    refreshTimer = setInterval(() => showDashboard(parseHash().view, parseHash().params), seconds * 1000);
  }
}

async function loadFilterOptions(params) {
  const form = document.getElementById("filters");
  try {
    const q = new URLSearchParams({ range: params.get("range") || form.elements.range.value });
    const options = await getJson(`/api/filters?${q}`);
    for (const key of ["agent", "workflow", "environment"]) {
      const select = form.elements[key];
      const current = params.get(key) || "";
      const values = options[key] || [];
      if (current && !values.includes(current)) values.unshift(current);
      select.replaceChildren(el("option", { value: "" }, "all"),
        ...values.map(v => el("option", { value: v }, v)));
      select.value = current;
    }
  } catch (err) {
    console.error("filter options", err);
  }
}

// --- dashboards ------------------------------------------------------------------------

async function showDashboard(view, params) {
  const mine = ++generation;
  if (!dashboards) dashboards = await getJson("/api/dashboards");
  const grid = document.getElementById("dashboard");
  const panels = dashboards[view] || [];
  if (grid.dataset.view !== view) {
    grid.replaceChildren(...panels.map(panelCard));
    grid.dataset.view = view;
  }
  const q = apiQuery(params);
  await Promise.all(panels.map(async meta => {
    const card = grid.querySelector(`[data-panel="${meta.name}"]`);
    try {
      const data = await getJson(`/api/panels/${meta.name}?${q}`);
      if (mine !== generation) return;
      render(card, data);
      card.dataset.rows = data.rows.length;
      card.dataset.state = "ready";
    } catch (err) {
      if (mine !== generation) return;
      card.querySelector(".body").replaceChildren(el("div", { class: "error" }, String(err)));
      card.dataset.state = "error";
    }
  }));
  if (mine === generation) {
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    grid.dataset.loaded = String(mine);
  }
}

function panelCard(meta) {
  return el("article", { class: "panel", "data-panel": meta.name, "data-chart": meta.chart,
                         "data-state": "loading", style: `grid-column: span ${meta.width}` },
    el("h2", {}, meta.title), el("p", { class: "desc" }, meta.description),
    el("div", { class: "body" }, el("div", { class: "empty" }, "loading…")));
}

function render(card, data) {
  const body = card.querySelector(".body");
  if (!data.rows.length) {
    if (body.querySelector(".chart")) Plotly.purge(body.querySelector(".chart"));
    body.replaceChildren(el("div", { class: "empty" }, "no data in this range"));
    return;
  }
  const draw = { timeseries: drawTimeseries, bar: drawBar, stat: drawStat, table: drawTable,
                 timeline: drawTimeline }[data.chart];
  draw(body, data);
}

function chartDiv(body) {
  let div = body.querySelector(".chart");
  if (!div) { div = el("div", { class: "chart" }); body.replaceChildren(div); }
  return div;
}

function layoutFor(data, extra = {}) {
  return Object.assign({
    margin: { l: 50, r: 10, t: 6, b: 40 }, showlegend: true,
    legend: { orientation: "h", y: -0.22, font: { size: 11 } },
    yaxis: { title: { text: data.unit || "" }, rangemode: "tozero", automargin: true },
    xaxis: { automargin: true },
    font: { size: 11 }, paper_bgcolor: "#fff", plot_bgcolor: "#fff",
  }, extra);
}

function bySeries(rows, columns, xKey) {
  const ix = columns.indexOf(xKey), is = columns.indexOf("series"), iv = columns.indexOf("value");
  const groups = new Map();
  for (const row of rows) {
    const s = row[is];
    if (!groups.has(s)) groups.set(s, { x: [], y: [] });
    groups.get(s).x.push(xKey === "t" ? plotTime(row[ix]) : row[ix]);
    groups.get(s).y.push(row[iv]);
  }
  return groups;
}

function drawTimeseries(body, data) {
  const traces = [...bySeries(data.rows, data.columns, "t")].map(([name, g], i) => ({
    type: "scatter", mode: g.x.length > 1 ? "lines" : "markers", name, x: g.x, y: g.y,
    line: { width: 2, color: SERIES_COLORS[i % SERIES_COLORS.length] },
  }));
  Plotly.react(chartDiv(body), traces, layoutFor(data, { xaxis: { title: { text: "UTC" }, automargin: true } }),
    { displayModeBar: false, responsive: true });
}

function drawBar(body, data) {
  const groups = [...bySeries(data.rows, data.columns, "category")];
  const horizontal = data.orientation === "horizontal";
  const traces = groups.map(([name, g], i) => ({
    type: "bar", name, orientation: horizontal ? "h" : "v",
    x: horizontal ? g.y : g.x, y: horizontal ? g.x : g.y,
    marker: { color: MODE_COLORS[name] || SERIES_COLORS[i % SERIES_COLORS.length] },
  }));
  const grouped = groups.some(([name]) => name === "budget");
  const extra = { barmode: grouped ? "group" : "stack", showlegend: groups.length > 1 };
  if (horizontal) {
    const n = new Set(data.rows.map(r => r[0])).size;
    Object.assign(extra, {
      margin: { l: 10, r: 10, t: 6, b: 40 },
      yaxis: { autorange: "reversed", automargin: true, type: "category" },
      xaxis: { title: { text: data.unit || "" }, rangemode: "tozero", automargin: true },
      legend: { orientation: "v", x: 1.02, y: 1, font: { size: 10 } },
      height: Math.max(240, 28 + 22 * n),
    });
    chartDiv(body).style.height = `${extra.height}px`;
  }
  Plotly.react(chartDiv(body), traces, layoutFor(data, extra),
    { displayModeBar: false, responsive: true });
}

function drawTimeline(body, data) {
  const c = name => data.columns.indexOf(name);
  const byMode = new Map();
  for (const row of data.rows) {
    const mode = row[c("mode")];
    const key = row[c("scope")] === "run" ? "run stopped" : mode;
    if (!byMode.has(key)) byMode.set(key, { x: [], y: [], text: [] });
    const g = byMode.get(key);
    g.x.push(plotTime(row[c("t")]));
    g.y.push(row[c("agent_id")]);
    g.text.push(`${row[c("previous_mode")]} → ${mode}<br>${row[c("rule")]}: ${String(row[c("reason")]).slice(0, 120)}`);
  }
  const traces = [...byMode].map(([name, g]) => ({
    type: "scatter", mode: "markers", name, x: g.x, y: g.y, text: g.text, hoverinfo: "text+x",
    marker: { size: 12, symbol: name === "run stopped" ? "x" : "diamond",
              color: MODE_COLORS[name] || "#4b5563" },
  }));
  Plotly.react(chartDiv(body), traces,
    layoutFor(data, { margin: { l: 150, r: 10, t: 6, b: 40 }, yaxis: { automargin: true, type: "category" },
                      xaxis: { title: { text: "UTC" } } }),
    { displayModeBar: false, responsive: true });
}

function drawStat(body, data) {
  const row = data.rows[0];
  const tiles = data.columns.map((name, i) => el("div",
    { class: "tile" + ((/downgraded|blocked|detections/.test(name) && row[i] > 0) ? " alert" : ""),
      "data-stat": name },
    el("div", { class: "v" }, row[i] === null ? "–" : formatCell(name, row[i])),
    el("div", { class: "k" }, humanize(name))));
  body.replaceChildren(el("div", { class: "tiles" }, ...tiles));
}

function drawTable(body, data) {
  body.replaceChildren(el("div", { class: "scroll" }, table(data.columns, data.rows, data.link)));
}

function table(columns, rows, link, rowClass) {
  const head = el("tr", {}, ...columns.map(c => el("th", {}, humanize(c))));
  const trs = rows.map((row, r) => el("tr", { class: rowClass ? rowClass(r) : null },
    ...row.map((v, i) => cell(columns[i], v, link))));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...trs));
}

function cell(column, value, link) {
  if (column === link && value) {
    const q = new URLSearchParams({ run: value });
    return el("td", {}, el("a", { href: `#/evidence?${q}`, class: "evidence-link" }, value));
  }
  if (column === "mode" || column === "previous_mode") {
    return el("td", {}, el("span", { class: `mode mode-${value}` }, value));
  }
  return el("td", { class: typeof value === "number" ? "num" : null }, formatCell(column, value));
}

// --- evidence --------------------------------------------------------------------------

async function showEvidence(run) {
  const form = document.getElementById("evidence-form");
  form.elements.run.value = run;
  const out = document.getElementById("evidence-body");
  const md = document.getElementById("evidence-md"), js = document.getElementById("evidence-json");
  md.hidden = js.hidden = !run;
  if (!run) {
    out.replaceChildren(el("p", { class: "muted" },
      "Enter a run id (or open a run from the Safety dashboard's blocked runs table), or a scope and window."));
    return;
  }
  const url = `/api/evidence/run/${encodeURIComponent(run)}`;
  md.href = `${url}?format=markdown`;
  js.href = url;
  out.dataset.state = "loading";
  try {
    const ev = await getJson(url);
    out.replaceChildren(...evidenceView(ev));
    out.dataset.state = "ready";
  } catch (err) {
    out.replaceChildren(el("div", { class: "error" }, String(err)));
    out.dataset.state = "error";
  }
}

function evidenceView(ev) {
  const s = ev.summary;
  const counts = o => Object.entries(o || {}).map(([k, v]) => `${k || "(none)"} ${v}`).join(", ") || "none";
  const sideEffects = Object.values(s.side_effects_by_class || {}).reduce((a, b) => a + b, 0);
  const summary = [
    ["Run", ev.scope.run_id], ["Agent", s.agents.join(", ")], ["Version", s.agent_versions.join(", ")],
    ["Workflow", s.workflows.join(", ")], ["Owner", s.owners.join(", ")],
    ["Environment", s.environments.join(", ")],
    ["Time (UTC)", `${formatCell("t", s.first_ts)} → ${formatCell("t", s.last_ts)}`],
    ["Outcome", counts(s.run_outcomes)], ["Steps", `${s.steps} (${counts(s.steps_by_kind)})`],
    ["Side effects that ran", `${sideEffects} (${counts(s.side_effects_by_class)})`],
    ["Policy decisions", counts(s.policy_outcomes)],
    ["Approvals", `${s.approvals_requested} requested, ${s.approvals_granted} granted, ${s.approvals_rejected} rejected`],
    ["Cost", `$${s.cost_usd.toFixed(4)} (${s.input_tokens + s.output_tokens} tokens)`],
    ["Detections", counts(s.detections_by_severity)], ["Mode changes", String(s.mode_changes)],
  ];
  const section = (title, columns, rows, rowClass) => el("div", { class: "card", "data-section": title },
    el("h2", {}, `${title} (${rows.length})`),
    rows.length ? el("div", { class: "scroll" }, table(columns, rows.map(r => columns.map(c => r[c])), null, rowClass))
                : el("p", { class: "muted" }, "none"));
  const stepCols = ["ts", "step", "kind", "tool", "action_class", "policy_outcome", "policy_rule",
                    "status", "outcome", "approver", "approved", "wait_ms", "cost_usd", "latency_ms", "event_id"];
  const blocked = new Set(ev.blocked_actions.map(b => b.event_id));
  const effects = new Set(ev.side_effects.map(b => b.event_id));
  return [
    el("div", { class: "card", "data-section": "summary" },
      el("h2", {}, "Incident evidence"), table(["what", "value"], summary)),
    section("Side effects that ran", ["ts", "step", "tool", "action_class", "status", "approved_by", "params_hash", "event_id"], ev.side_effects),
    section("Blocked actions", ["ts", "step", "tool", "action_class", "policy_outcome", "policy_rule", "approver"], ev.blocked_actions),
    section("Detections", ["ts", "severity", "detector", "metric", "value", "threshold", "message"], ev.detections),
    section("Mode changes", ["issued_at", "seq", "scope", "previous_mode", "mode", "rule", "source", "reason"], ev.mode_changes),
    ...(ev.operator_commands ? [section("Operator commands",
      ["received_at", "operator", "action", "mode", "outcome", "reject_reason", "reason"], ev.operator_commands)] : []),
    section("Every step", stepCols, ev.steps,
      r => blocked.has(ev.steps[r].event_id) ? "blocked" : (effects.has(ev.steps[r].event_id) ? "effect" : null)),
  ];
}

// --- evidence of a scope and window (what `tripwire evidence --scope` prints) ----------

// Scope selectors in the order, and with the names, of the CLI's scope keys (sdk/scopes.py).
const SCOPE_FIELDS = [["agent", "agent"], ["version", "version"], ["environment", "environment"],
  ["workflow", "workflow"], ["tool", "tool"], ["action_class", "action_class"]];
const REVERSIBILITY = [
  ["irreversible", "Irreversible side effects: undo by hand, or cannot be undone"],
  ["compensable", "Compensable side effects: a compensating action exists"],
  ["reversible", "Reversible side effects: nothing to undo"],
];

function scopeKeyFromForm(form) {
  const parts = SCOPE_FIELDS.map(([input, name]) => [name, form.elements[input].value.trim()])
    .filter(([, v]) => v).map(([name, v]) => `${name}=${v}`);
  return parts.length ? parts.join(";") : "fleet";
}

function fillScopeForm(form, scope, since, until) {
  const values = Object.fromEntries((scope === "fleet" ? "" : scope).split(";").filter(Boolean)
    .map(part => { const i = part.indexOf("="); return [part.slice(0, i), part.slice(i + 1)]; }));
  for (const [input, name] of SCOPE_FIELDS) form.elements[input].value = values[name] || "";
  form.elements.since.value = since;
  form.elements.until.value = until;
}

async function showScopeEvidence(scope, since, until) {
  const form = document.getElementById("scope-form");
  fillScopeForm(form, scope, since, until);
  document.getElementById("evidence-form").elements.run.value = "";
  const out = document.getElementById("evidence-body");
  const md = document.getElementById("evidence-md"), js = document.getElementById("evidence-json");
  const q = new URLSearchParams({ scope, from: since || new Date(Date.now() - 15 * 60_000).toISOString() });
  if (until) q.set("to", until);
  const url = `/api/evidence/scope?${q}`;
  md.hidden = js.hidden = false;
  md.href = `${url}&format=markdown`;
  js.href = url;
  out.dataset.state = "loading";
  try {
    const ev = await getJson(url);
    out.replaceChildren(...scopeEvidenceView(ev));
    out.dataset.state = "ready";
  } catch (err) {
    out.replaceChildren(el("div", { class: "error" }, String(err)));
    out.dataset.state = "error";
  }
}

function scopeEvidenceView(ev) {
  const s = ev.summary;
  const byTool = kind => Object.entries((s.side_effects_by_tool || {})[kind] || {})
    .map(([tool, n]) => `${tool} ${n}`).join(", ");
  const summary = [
    ["Scope", s.scope],
    ["Window (UTC)", `${formatCell("t", s.since)} → ${formatCell("t", s.until)}`],
    ["Agents", `${s.agents.length}: ${s.agents.slice(0, 20).join(", ")}${s.agents.length > 20 ? " …" : ""}`],
    ["Steps", String(s.steps)],
    ...REVERSIBILITY.map(([kind]) => [`Side effects, ${kind}`,
      `${(s.side_effects || {})[kind] || 0}${byTool(kind) ? ` (${byTool(kind)})` : ""}`]),
  ];
  const section = (key, title, columns, rows) => el("div", { class: "card", "data-section": key },
    el("h2", {}, `${title} (${rows.length})`),
    rows.length ? el("div", { class: "scroll" }, table(columns, rows.map(r => columns.map(c => r[c]))))
                : el("p", { class: "muted" }, "none"));
  const effectCols = ["ts", "agent_id", "run_id", "tool", "action_class", "status", "params_hash", "event_id"];
  const changeCols = ["value", "first_seen", "last_seen", "steps", "agents", "appeared"];
  const changes = Object.entries(ev.changes_before || {}).map(([what, rows]) =>
    section(`changed: ${what}`, `What changed just before: ${what}`, changeCols,
      rows.map(r => ({ ...r, appeared: r.appeared ? "mid-way" : "" }))));
  return [
    el("div", { class: "card", "data-section": "summary" },
      el("h2", {}, "Incident evidence by scope"), table(["what", "value"], summary)),
    ...REVERSIBILITY.map(([kind, title]) =>
      section(kind, title, effectCols, (ev.side_effects || {})[kind] || [])),
    ...changes,
    section("Mode changes", "Mode changes (controls)",
      ["issued_at", "agent_id", "scope", "previous_mode", "mode", "rule", "source", "reason"], ev.mode_changes),
    section("Every step", "Every step",
      ["ts", "agent_id", "agent_version", "run_id", "step", "kind", "tool", "action_class",
       "policy_outcome", "status", "model", "event_id"], ev.steps),
  ];
}

// --- wiring ----------------------------------------------------------------------------

document.getElementById("filters").addEventListener("change", () => {
  const { view } = parseHash();
  const p = filterParams();
  if (view === "evidence") {
    for (const key of ["run", "scope", "since", "until"]) {
      if (parseHash().params.get(key)) p.set(key, parseHash().params.get(key));
    }
  }
  setHash(view, p);
});
document.getElementById("reload").addEventListener("click", () => route());
document.getElementById("scope-form").addEventListener("submit", ev => {
  ev.preventDefault();
  const form = ev.target;
  const p = filterParams();
  p.set("scope", scopeKeyFromForm(form));
  // The window is part of the link: "15 min ago" is pinned to an instant when asked.
  p.set("since", form.elements.since.value.trim() || new Date(Date.now() - 15 * 60_000).toISOString());
  if (form.elements.until.value.trim()) p.set("until", form.elements.until.value.trim());
  setHash("evidence", p);
});
document.getElementById("evidence-form").addEventListener("submit", ev => {
  ev.preventDefault();
  const p = filterParams();
  p.set("run", ev.target.elements.run.value.trim());
  setHash("evidence", p);
});
document.querySelectorAll("nav a[data-view]").forEach(a => a.addEventListener("click", ev => {
  ev.preventDefault();
  setHash(a.dataset.view, filterParams());
}));
window.addEventListener("hashchange", route);
route();
