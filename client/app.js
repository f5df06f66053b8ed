// gradwatch dashboard: run list, run selection (also via #run=ID), live
// charts, training controls and the command log.
//
// Selecting a run (and every websocket reconnect while a run is selected):
//   1. send {"type":"subscribe"} and buffer live `steps` for that run,
//   2. fetch /api/runs/{id}, /api/runs/{id}/metrics (since the last step we
//      already have) and /api/runs/{id}/commands,
//   3. merge REST data, then the buffer; duplicates (by step) are dropped.
// After that live records go straight into the RunStore and the charts
// render them once per animation frame.

import {
  ALERT_KINDS, alertLayers, bannerAlert, isOpen, kindLabel, matchVariables, renderBanner, renderRules, renderTimeline,
  summarize,
} from "./alerts.js";
import { Charts, RATIO_RULE } from "./charts.js";
import { LiveSocket } from "./live.js";
import { RunStore } from "./store.js";
import { el, errorDetail, fmtAgo, fmtClip, fmtInt, fmtLr, fmtNum, getJSON, num, patchJSON, postJSON } from "./util.js";

const METRICS_MAX_POINTS = 2000;
const $ = (id) => document.getElementById(id);

// Test/automation hook, kept current.
const gw = { steps: 0, lastStep: null, runId: null, connected: false };
window.gradwatch = gw;

const state = {
  runs: new Map(), // id -> RunSummary (+ detail fields from `run` messages)
  selected: null, // run id
  detail: null, // RunDetail of the selected run
  store: null, // RunStore of the selected run
  commands: new Map(), // id -> CommandView (selected run)
  buffering: false,
  buffer: [],
  selectSeq: 0, // bumps on every run selection
  syncSeq: 0, // bumps on every (re)sync
  fatal: false,
  autoSelected: false,
  alerts: new Map(), // id -> AlertView (selected run)
  rules: null, // {kind: {muted, params}} of the selected run; null until loaded
  rulesAvailable: true, // false when the server has no alert-rules route
  rulesBusy: new Set(), // kinds with a PATCH in flight
  runAlerts: new Map(), // run id -> Map(alert id -> AlertView): every run's alerts seen (run list badges)
  alertsRouteMissing: false,
};

const charts = new Charts(
  {
    heatmap: $("chart-heatmap"),
    global: $("chart-global-norm"),
    nonfinite: $("chart-nonfinite"),
    bn: $("chart-bn"),
    losslr: $("chart-loss-lr"),
    ratio: $("chart-update-ratio"),
    probe: $("chart-probe"),
  },
  {
    onStats: renderStats,
    onProbe: (has) => {
      $("card-probe").hidden = !has;
    },
  },
);

// ------------------------------------------------------------------ connection indicator

function setConn(s) {
  const box = $("conn");
  const text = $("conn-text");
  box.dataset.state = s.state;
  gw.connected = s.state === "connected";
  if (s.state === "connected") {
    text.textContent = "Live";
    box.title = "Connected to the gradwatch server";
  } else if (s.state === "connecting") {
    text.textContent = "Connecting…";
    box.title = "";
  } else if (s.state === "reconnecting") {
    const secs = Math.max(1, Math.round((s.retryIn || 0) / 1000));
    text.textContent = `Reconnecting in ${secs} s`;
    box.title = s.detail || "";
  } else {
    text.textContent = "Disconnected";
    box.title = s.detail || "";
  }
}

function showFatal(message) {
  state.fatal = true;
  const f = $("fatal");
  f.textContent = message;
  f.hidden = false;
  setConn({ state: "error", detail: message });
}

// ------------------------------------------------------------------ run list

let runListRaf = 0;
function scheduleRunList() {
  if (!runListRaf) runListRaf = requestAnimationFrame(() => {
    runListRaf = 0;
    renderRunList();
  });
}

function sortedRuns() {
  return [...state.runs.values()].sort((a, b) => (b.created_at || 0) - (a.created_at || 0) || b.id - a.id);
}

// Run list items are kept and updated in place (keyed by run id), so a
// click or hover is never interrupted by a live update replacing the node.
const runItems = new Map(); // id -> {li, name, status, step, age}

function makeRunItem(id) {
  const name = el("span", { class: "run-name", dataset: { testid: "run-item-name" } });
  const status = el("span", { dataset: { testid: "run-item-status" } });
  const step = el("span", { dataset: { testid: "run-item-step" } });
  const age = el("span", { class: "run-age" });
  const alerts = el("span", { class: "run-alerts", dataset: { testid: "run-item-alerts" } });
  const right = el("span", { class: "run-badges" }, status);
  const a = el("a", { href: `#run=${id}`, class: "run-link" },
    el("span", { class: "run-line1" }, name, right),
    el("span", { class: "run-line2 muted" }, el("span", {}, `#${id}`), step, age));
  const li = el("li", { class: "run-item", dataset: { testid: "run-item", runId: String(id) } }, a);
  return { li, a, name, status, step, age, alerts, right };
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function renderRunList() {
  const list = $("run-list");
  const runs = sortedRuns();
  const keep = new Set(runs.map((r) => r.id));
  for (const [id, it] of runItems) {
    if (!keep.has(id)) {
      it.li.remove();
      runItems.delete(id);
    }
  }
  let prev = null;
  for (const r of runs) {
    let it = runItems.get(r.id);
    if (!it) {
      it = makeRunItem(r.id);
      runItems.set(r.id, it);
    }
    const selected = r.id === state.selected;
    it.li.classList.toggle("selected", selected);
    if (selected) it.a.setAttribute("aria-current", "true");
    else it.a.removeAttribute("aria-current");
    it.li.dataset.status = r.status || "";
    setText(it.name, r.name);
    it.name.title = r.name;
    setText(it.status, r.status || "unknown");
    it.status.className = `badge badge-${String(r.status || "unknown").replace(/[^a-z]/g, "")}`;
    setText(it.step, r.step === null || r.step === undefined ? "no steps yet" : `step ${fmtInt(r.step)}`);
    setText(it.age, fmtAgo(r.updated_at));
    renderRunBadge(it, r);
    // keep DOM order = sorted order, moving nodes only when needed
    const want = prev ? prev.nextSibling : list.firstChild;
    if (want !== it.li) list.insertBefore(it.li, want);
    prev = it.li;
  }
  $("runs-empty").hidden = runs.length > 0;
  $("runs-count").textContent = runs.length ? String(runs.length) : "";
}

// Open alerts of a run: from the alerts seen (REST and live), else a count the
// run summary may carry.
function renderRunBadge(it, r) {
  const sum = summarize(state.runAlerts.get(r.id));
  // RunSummary.alerts = {warning: n, critical: n}: counts of alerts the server holds for the run
  const counts = r.alerts && typeof r.alerts === "object" ? r.alerts : null;
  if (counts) {
    const w = Number(counts.warning) || 0;
    const c = Number(counts.critical) || 0;
    if (w + c > sum.count) sum.count = w + c;
    if (c > 0) sum.severity = "critical";
    else if (w > 0 && !sum.severity) sum.severity = "warning";
  }
  if (!sum.count) {
    if (it.alerts.isConnected) it.alerts.remove();
    return;
  }
  const sev = sum.severity === "critical" ? "critical" : "warning";
  setText(it.alerts, `▲ ${sum.count}`);
  it.alerts.className = `run-alerts sev-${sev}`;
  it.alerts.dataset.severity = sev;
  it.alerts.dataset.count = String(sum.count);
  const label = `${sum.count} open alert${sum.count === 1 ? "" : "s"}${sum.kinds.length ? `: ${sum.kinds.map(kindLabel).join(", ")}` : ""}`;
  it.alerts.title = label;
  it.alerts.setAttribute("aria-label", label);
  if (!it.alerts.isConnected) it.right.prepend(it.alerts);
}

function upsertRun(r) {
  if (!r || typeof r.id !== "number") return;
  const old = state.runs.get(r.id) || {};
  state.runs.set(r.id, { ...old, ...r });
  if (r.id === state.selected && state.detail) {
    const { variables, bn_layers, ...rest } = r; // a `run` message has neither; keep ours
    void variables;
    void bn_layers;
    state.detail = { ...state.detail, ...rest };
    renderRunHead();
  }
  scheduleRunList();
}

// Refresh "x s ago" labels now and then.
setInterval(scheduleRunList, 15000);

// ------------------------------------------------------------------ selection

function runIdFromHash() {
  const m = /(?:^#|&)run=(\d+)/.exec(location.hash);
  return m ? Number(m[1]) : null;
}

window.addEventListener("hashchange", () => {
  const id = runIdFromHash();
  if (id !== null && id !== state.selected) selectRun(id);
});

function selectRun(id) {
  if (state.selected === id && state.store) return;
  state.selected = id;
  state.selectSeq += 1;
  state.detail = null;
  state.store = null;
  state.commands.clear();
  state.alerts.clear();
  state.rules = null;
  state.rulesBusy.clear();
  state.buffer = [];
  state.buffering = true;
  charts.reset();
  charts.setHighlights([]);
  $("card-probe").hidden = true;
  $("lr-input").value = "";
  gw.runId = id;
  gw.steps = 0;
  gw.lastStep = null;
  if (runIdFromHash() !== id) history.replaceState(null, "", `#run=${id}`);
  hideControlError();
  $("placeholder").hidden = true;
  $("run-view").hidden = false;
  $("controls").hidden = false;
  const known = state.runs.get(id);
  $("run-name").textContent = known ? known.name : `Run ${id}`;
  $("run-id").textContent = `#${id}`;
  setNotice("Loading…");
  renderNanBanner();
  renderCommands();
  renderAlertsNow();
  renderRunList();
  syncRun();
}

/**
 * Subscribe (when connected), fetch the run, its metrics since our last step
 * and its commands, then merge the live records buffered meanwhile.
 */
async function syncRun() {
  const id = state.selected;
  if (id === null) return;
  const selectSeq = state.selectSeq;
  const seq = ++state.syncSeq;
  state.buffering = true;
  state.buffer = [];
  // While the first connection is being made, wait for it: onOpen subscribes
  // and then fetches. If it fails, onState falls back to REST alone.
  if (!live.connected && live.firstAttemptPending) return;
  live.send({ type: "subscribe", run_id: id }); // FIRST, so nothing falls between REST and live
  try {
    const detail = await getJSON(`/api/runs/${id}`);
    if (seq !== state.syncSeq || selectSeq !== state.selectSeq) return;
    const since = state.store && state.store.lastStep !== null ? state.store.lastStep + 1 : null;
    let url = `/api/runs/${id}/metrics?max_points=${METRICS_MAX_POINTS}`;
    if (since !== null) url += `&since_step=${since}`;
    const [metrics, commands, alerts, rules] = await Promise.all([
      getJSON(url), getJSON(`/api/runs/${id}/commands`), optionalJSON(`/api/runs/${id}/alerts`),
      optionalJSON(`/api/runs/${id}/alert-rules`),
    ]);
    if (seq !== state.syncSeq || selectSeq !== state.selectSeq) return;

    const fresh = !state.store;
    if (fresh) state.store = new RunStore(detail);
    state.detail = detail;
    state.runs.set(id, { ...(state.runs.get(id) || {}), ...summaryOf(detail) });
    const store = state.store;
    store.addColumns(metrics);
    for (const rec of state.buffer) store.addRecord(rec);
    state.buffer = [];
    for (const p of state.probeBuffer || []) store.addProbe(p);
    state.probeBuffer = [];
    state.buffering = false;
    for (const c of commands || []) mergeCommand(c);
    if (alerts.ok && Array.isArray(alerts.body)) {
      state.alerts.clear();
      for (const a of alerts.body) mergeAlert(a);
      state.runAlerts.set(id, new Map(state.alerts));
    }
    state.rulesAvailable = rules.ok;
    if (rules.ok && rules.body && typeof rules.body === "object") state.rules = { ...rules.body };
    if (fresh) {
      fillClipForm(detail.clip);
      fillLr(detail.lr ?? lastLr(store));
      charts.attach(store);
    } else {
      charts.schedule();
    }
    setNotice(null);
    updateProgress();
    renderRunHead();
    renderCommands();
    scheduleAlerts();
    scheduleRunList();
  } catch (e) {
    if (seq !== state.syncSeq || selectSeq !== state.selectSeq) return;
    state.buffering = false;
    if (e.status === 404) setNotice(`Run ${id} does not exist (it may have been deleted).`, "error");
    else if (e.status === 401 || e.status === 403) setNotice(`Not signed in: open the login link printed by \`gradwatch serve\`. (${e.message})`, "error");
    else setNotice(`Could not load run ${id}: ${e.message}. Retrying on reconnect.`, "error");
  }
}

/** GET that may legitimately fail (a route this server does not have yet): {ok, status, body}. */
async function optionalJSON(url) {
  try {
    return { ok: true, status: 200, body: await getJSON(url) };
  } catch (e) {
    if (e.status === 401 || e.status === 403) throw e;
    return { ok: false, status: e.status || 0, body: null, message: e.message };
  }
}

function summaryOf(d) {
  const { id, name, status, step, created_at, updated_at } = d;
  return { id, name, status, step, created_at, updated_at };
}

function setNotice(text, kind) {
  const n = $("run-notice");
  n.hidden = !text;
  n.textContent = text || "";
  n.className = kind === "error" ? "notice notice-error" : "notice";
}

function updateProgress() {
  const s = state.store;
  if (!s) return;
  gw.steps = s.received;
  gw.lastStep = s.lastStep;
  $("run-points").textContent = fmtInt(s.received);
  const r = state.runs.get(state.selected);
  if (r && s.lastStep !== null && (r.step === null || r.step === undefined || s.lastStep > r.step)) {
    r.step = s.lastStep;
    scheduleRunList();
  }
}

// ------------------------------------------------------------------ run header / stats

function renderRunHead() {
  const d = state.detail || state.runs.get(state.selected);
  if (!d) return;
  $("run-name").textContent = d.name;
  document.title = `${d.name} · gradwatch`;
  $("run-id").textContent = `#${d.id}`;
  const st = $("run-status");
  st.textContent = d.status || "unknown";
  st.className = `badge badge-${String(d.status || "unknown").replace(/[^a-z]/g, "")}`;
  st.dataset.status = d.status || "";
  const step = state.store && state.store.lastStep !== null ? state.store.lastStep : d.step;
  $("run-step").textContent = fmtInt(step);
  $("run-clip").textContent = fmtClip(d.clip);
  renderLr();
  renderGuards(d);
  const finished = d.status === "finished";
  for (const b of document.querySelectorAll("[data-cmd]")) b.disabled = finished || b.dataset.busy === "1";
  $("clip-apply").disabled = finished;
  $("lr-apply").disabled = finished || $("lr-apply").dataset.busy === "1";
  $("btn-pause").classList.toggle("is-active", d.status === "paused");
  $("controls").classList.toggle("is-finished", finished);
}

function renderStats(s) {
  updateProgress();
  const st = Charts.stats(s);
  $("stat-clip").textContent = st.clippedShare === null ? "" : `${(100 * st.clippedShare).toFixed(1)}% of steps clipped`;
  $("stat-loss").textContent = st.lastLoss === null ? "" : `loss ${fmtNum(st.lastLoss, 4)} · lr ${fmtNum(st.lastLr, 3)}`;
  $("run-sps").textContent = st.lastSps === null ? "–" : fmtNum(st.lastSps, 3);
  const step = s.lastStep;
  if (step !== null) $("run-step").textContent = fmtInt(step);
  renderLr();
  renderRatioStat(s);
  renderNanBanner();
}

// What the trainer does on its own: pause_on (the server pauses the run on those alerts), guard_nonfinite.
function renderGuards(d) {
  const parts = [];
  if (Array.isArray(d.pause_on) && d.pause_on.length) parts.push(`Pauses itself on: ${d.pause_on.map(kindLabel).join(", ")}`);
  if (d.guard_nonfinite) parts.push("skips non-finite updates");
  const p = $("run-guards");
  setText(p, parts.join(" · "));
  p.hidden = parts.length === 0;
}

function lastLr(s) {
  if (!s) return null;
  for (let i = s.length - 1; i >= Math.max(0, s.length - 50); i--) if (s.c.lr[i] !== null) return s.c.lr[i];
  return null;
}

/** The latest learning rate: the newest reported step's, else RunDetail.lr. */
function renderLr() {
  const fromSteps = lastLr(state.store);
  const d = state.detail;
  const lr = fromSteps !== null ? fromSteps : d ? num(d.lr) : null;
  const text = lr === null || lr === undefined ? "–" : fmtLr(lr);
  setText($("run-lr"), text);
  setText($("lr-current"), lr === null || lr === undefined ? "" : `now ${text}`);
}

function fillLr(lr) {
  const x = num(lr);
  if (x !== null && Number.isFinite(x) && !$("lr-input").value) $("lr-input").value = String(Number(x.toPrecision(6)));
}

function renderRatioStat(s) {
  const stat = $("stat-ratio");
  if (!s.urSeen) {
    setText(stat, s.length ? "not measured" : "");
    return;
  }
  // median over variables at the newest step that has ratios
  for (let i = s.length - 1; i >= Math.max(0, s.length - 20); i--) {
    const vals = s.ur.map((a) => a[i]).filter((x) => x !== null && Number.isFinite(x) && x > 0).sort((a, b) => a - b);
    if (!vals.length) continue;
    const med = vals[Math.floor(vals.length / 2)];
    const ratio = med / RATIO_RULE;
    const hint = ratio > 10 ? " · high" : ratio < 0.1 ? " · low" : "";
    setText(stat, `median ${fmtNum(med, 2)}${hint}`);
    stat.className = `stat${hint ? " stat-warn" : ""}`;
    return;
  }
}

function renderNanBanner() {
  const s = state.store;
  const banner = $("nan-banner");
  const stat = $("stat-nan");
  renderNonfiniteList(s);
  if (!s || !s.firstNonfinite) {
    banner.hidden = true;
    stat.textContent = s ? "none so far" : "";
    stat.className = "stat stat-ok";
    return;
  }
  const bad = s.nonfiniteVariables();
  const parts = [];
  if (bad.length) parts.push(`${bad.length} variable${bad.length === 1 ? "" : "s"}`);
  if (s.lossNonfinite) parts.push(`loss on ${s.lossNonfinite} step${s.lossNonfinite === 1 ? "" : "s"}`);
  if (s.weightNonfinite) parts.push(`weights on ${s.weightNonfinite} step${s.weightNonfinite === 1 ? "" : "s"}`);
  $("nan-title").textContent = `NaN/Inf detected since step ${fmtInt(s.firstNonfinite.step)}`;
  const names = bad.slice(0, 12).map((b) => `${b.name} (${fmtInt(b.count)})`);
  let detail = parts.length ? ` in ${parts.join(", ")}` : " in the global gradient norm";
  if (names.length) detail += `: ${names.join(", ")}${bad.length > names.length ? `, and ${bad.length - names.length} more` : ""}`;
  $("nan-detail").textContent = detail;
  banner.dataset.variables = JSON.stringify(bad.map((b) => b.name));
  banner.hidden = false;
  stat.textContent = `${bad.length} variable${bad.length === 1 ? "" : "s"} affected`;
  stat.className = "stat stat-bad";
}

let nfRendered = -1;
function renderNonfiniteList(s) {
  const version = s ? s.nfVersion : -1;
  if (version === nfRendered && s) return;
  nfRendered = version;
  const bad = s ? s.nonfiniteVariables() : [];
  const items = bad.slice(0, 200).map((b) =>
    el("li", { class: "nf-item", dataset: { testid: "nonfinite-var" }, title: b.name },
      el("span", { class: "nf-name" }, el("bdi", {}, b.name)),
      el("span", { class: "nf-count" }, fmtInt(b.count)),
      el("span", { class: "nf-sub" }, `${fmtInt(b.steps)} step${b.steps === 1 ? "" : "s"} · last at step ${fmtInt(b.last)}`)),
  );
  $("nf-list").replaceChildren(...items);
  $("nf-empty").hidden = bad.length > 0;
}

// ------------------------------------------------------------------ controls

function fillClipForm(clip) {
  if (!clip) return;
  $("clip-mode").value = clip.mode || "global_norm";
  const t = num(clip.threshold);
  $("clip-threshold").value = t === null || !Number.isFinite(t) ? "" : String(t);
}

function showControlError(message) {
  const box = $("control-error");
  box.textContent = message;
  box.hidden = false;
}

function hideControlError() {
  $("control-error").hidden = true;
  $("control-error").textContent = "";
}

async function sendCommand(cmd, button) {
  const id = state.selected;
  if (id === null) return;
  hideControlError();
  if (button) {
    button.dataset.busy = "1";
    button.disabled = true;
  }
  try {
    const res = await postJSON(`/api/runs/${id}/commands`, cmd);
    if (id === state.selected && res && typeof res.id === "number") {
      mergeCommand({
        id: res.id, run_id: id, type: cmd.type, mode: cmd.mode ?? null, threshold: cmd.threshold ?? null, lr: cmd.lr ?? null,
        origin: "browser", created_at: Date.now() / 1000, state: res.state || "pending", applied_step: null,
        detail: null, updated_at: Date.now() / 1000,
      });
      renderCommands();
    }
  } catch (e) {
    const code = e.status ? `${e.status}: ` : "";
    showControlError(`${cmd.type} was not sent — ${code}${e.message}`);
  } finally {
    if (button) {
      delete button.dataset.busy;
      renderRunHead();
      if (!state.detail) button.disabled = false;
    }
  }
}

for (const b of document.querySelectorAll("[data-cmd]")) {
  b.addEventListener("click", () => sendCommand({ type: b.dataset.cmd }, b));
}

$("clip-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const raw = $("clip-threshold").value.trim();
  const mode = $("clip-mode").value;
  if (raw === "") {
    showControlError("Enter a clip threshold: a number greater than 0, e.g. 1.0.");
    $("clip-threshold").focus();
    return;
  }
  const threshold = Number(raw);
  if (!Number.isFinite(threshold)) {
    showControlError(`"${raw}" is not a number; enter a threshold greater than 0, e.g. 1.0.`);
    return;
  }
  sendCommand({ type: "set_clip", mode, threshold }, $("clip-apply"));
});

$("lr-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const raw = $("lr-input").value.trim();
  if (raw === "") {
    showControlError("Enter a learning rate: a number greater than 0, e.g. 0.001.");
    $("lr-input").focus();
    return;
  }
  const lr = Number(raw);
  if (!Number.isFinite(lr)) {
    showControlError(`"${raw}" is not a number; enter a learning rate greater than 0, e.g. 0.001.`);
    return;
  }
  sendCommand({ type: "set_lr", lr }, $("lr-apply"));
});

// ------------------------------------------------------------------ command log

const STATE_RANK = { pending: 0, applied: 1, rejected: 1 };

function mergeCommand(c) {
  if (!c || typeof c.id !== "number") return;
  const old = state.commands.get(c.id);
  if (old && (STATE_RANK[old.state] ?? 0) > (STATE_RANK[c.state] ?? 0)) return; // never go back to pending
  state.commands.set(c.id, { ...(old || {}), ...c });
}

function describeCommand(c) {
  if (c.type === "set_clip") {
    const parts = ["set clip"];
    if (c.mode) parts.push(c.mode);
    if (c.threshold !== null && c.threshold !== undefined) parts.push(`≤ ${fmtNum(num(c.threshold), 4)}`);
    return parts.join(" ");
  }
  if (c.type === "set_lr") return c.lr === null || c.lr === undefined ? "set lr" : `set lr → ${fmtLr(num(c.lr))}`;
  return c.type;
}

function describeState(c) {
  if (c.state === "applied") return c.applied_step === null || c.applied_step === undefined ? "applied" : `applied at step ${c.applied_step}`;
  if (c.state === "rejected") return `rejected: ${c.detail || "no reason given"}`;
  return "pending";
}

function renderCommands() {
  const cmds = [...state.commands.values()].sort((a, b) => b.id - a.id); // newest first
  const items = cmds.map((c) =>
    el("li", { class: `cmd cmd-${c.state}`, dataset: { testid: "command-entry", commandId: String(c.id), state: c.state, type: c.type } },
      el("span", { class: "cmd-what" }, describeCommand(c)),
      el("span", { class: "cmd-state", dataset: { testid: "command-state" } }, describeState(c)),
      el("span", { class: "cmd-meta muted", title: c.origin || "" },
        `#${c.id}${c.origin ? ` · ${String(c.origin).split(" (")[0]}` : ""}${c.created_at ? ` · ${new Date(c.created_at * 1000).toLocaleTimeString()}` : ""}`)),
  );
  $("cmd-log").replaceChildren(...items);
  $("cmd-empty").hidden = cmds.length > 0;
  $("cmd-count").textContent = cmds.length ? String(cmds.length) : "";
}

// ------------------------------------------------------------------ websocket

function onMessage(msg) {
  switch (msg.type) {
    case "runs": {
      const runs = Array.isArray(msg.runs) ? msg.runs : [];
      const seen = new Set();
      for (const r of runs) {
        seen.add(r.id);
        upsertRun(r);
      }
      for (const id of [...state.runs.keys()]) if (!seen.has(id) && id !== state.selected) state.runs.delete(id);
      scheduleRunList();
      maybeAutoSelect();
      prefetchRunAlerts();
      break;
    }
    case "run":
      upsertRun(msg.run);
      if (msg.run && msg.run.id === state.selected && msg.run.clip && state.detail) renderRunHead();
      maybeAutoSelect();
      break;
    case "steps": {
      if (msg.run_id !== state.selected || !Array.isArray(msg.records)) break;
      if (state.buffering || !state.store) {
        state.buffer.push(...msg.records);
        // bound memory if REST never answers; the next sync backfills from REST anyway
        if (state.buffer.length > 50000) state.buffer.splice(0, state.buffer.length - 50000);
        break;
      }
      let kept = 0;
      for (const r of msg.records) if (state.store.addRecord(r)) kept += 1;
      if (kept) {
        updateProgress();
        charts.schedule();
      }
      break;
    }
    case "command":
      if (msg.run_id !== state.selected || !msg.command) break;
      mergeCommand(msg.command);
      renderCommands();
      break;
    case "alert":
      onAlert(msg.run_id, msg.alert);
      break;
    case "alert_rules":
      if (msg.run_id === state.selected && msg.rules && typeof msg.rules === "object") {
        state.rules = { ...(state.rules || {}), ...msg.rules };
        scheduleAlerts();
      }
      break;
    case "probe":
      if (msg.run_id !== state.selected || !msg.probe) break;
      if (state.buffering || !state.store) {
        state.probeBuffer = state.probeBuffer || [];
        state.probeBuffer.push(msg.probe);
        break;
      }
      if (state.store.addProbe(msg.probe)) charts.schedule();
      break;
    case "gap":
      if (msg.run_id !== state.selected || !state.store) break;
      state.store.mergeGaps([msg]);
      charts.refreshGaps();
      break;
    default:
      break; // unknown types are ignored (forward compatible)
  }
}

// ------------------------------------------------------------------ alerts

function mergeAlert(a) {
  if (!a || typeof a.id !== "number") return false;
  const old = state.alerts.get(a.id);
  if (old && (old.updated_at || 0) > (a.updated_at || 0)) return false; // an older update arrived late
  state.alerts.set(a.id, { ...(old || {}), ...a });
  return true;
}

function onAlert(runId, a) {
  if (typeof runId !== "number" || !a || typeof a.id !== "number") return;
  let m = state.runAlerts.get(runId);
  if (!m) state.runAlerts.set(runId, (m = new Map()));
  m.set(a.id, { ...(m.get(a.id) || {}), ...a });
  scheduleRunList();
  if (runId === state.selected && mergeAlert(a)) scheduleAlerts();
}

function isMuted(kind) {
  return !!(state.rules && state.rules[kind] && state.rules[kind].muted);
}

// Alert rendering is batched to one update per animation frame, like the charts.
let alertsRaf = 0;
function scheduleAlerts() {
  if (!alertsRaf) alertsRaf = requestAnimationFrame(() => {
    alertsRaf = 0;
    renderAlertsNow();
  });
}

const bannerNodes = {
  banner: $("alert-banner"), kind: $("ab-kind"), sev: $("ab-sev"), where: $("ab-where"), more: $("ab-more"),
  message: $("ab-message"), evidence: $("ab-evidence"), remedies: $("ab-remedies"), remediesWrap: $("ab-remedies-wrap"), mute: $("ab-mute"),
};

function renderAlertsNow() {
  const alerts = [...state.alerts.values()];
  const top = bannerAlert(alerts, isMuted);
  const open = alerts.filter((a) => isOpen(a) && !isMuted(a.kind));
  renderBanner(bannerNodes, top, Math.max(0, open.length - 1), setMuted);
  renderTimeline($("alert-list"), $("alerts-empty"), alerts, isMuted);
  renderRules($("rule-list"), $("rules-note"), state.rules, state.rulesBusy, state.rulesAvailable, setMuted);
  const note = $("rules-note");
  if (!state.rulesAvailable && state.store) {
    note.hidden = false;
    note.textContent = "This server does not offer alert rules.";
  } else if (note.dataset.error !== "1") {
    note.hidden = true;
  }
  const stat = $("stat-alerts");
  const crit = open.filter((a) => a.severity === "critical").length;
  stat.textContent = open.length ? `${open.length} open${crit ? ` · ${crit} critical` : ""}` : state.store ? "none" : "";
  stat.className = `stat ${crit ? "stat-bad" : open.length ? "stat-warn" : "stat-ok"}`;
  // heatmap rows of open, unmuted alerts, from the step each was first seen
  const variables = state.store ? state.store.variables : [];
  const hl = [];
  for (const a of open) {
    for (const v of matchVariables(alertLayers(a), variables)) {
      hl.push({ variable: v, step: a.step, severity: a.severity, kind: a.kind });
    }
  }
  charts.setHighlights(hl);
  renderHighlightList(hl);
}

function renderHighlightList(hl) {
  const byVar = new Map();
  for (const h of hl) {
    const old = byVar.get(h.variable);
    if (!old) byVar.set(h.variable, { ...h, kinds: new Set([h.kind]) });
    else {
      old.step = Math.min(old.step, h.step);
      if (h.severity === "critical") old.severity = "critical";
      old.kinds.add(h.kind);
    }
  }
  const items = [...byVar.values()].slice(0, 40).map((h) =>
    el("li", {
      class: `heat-hl-item sev-${h.severity === "critical" ? "critical" : "warning"}`,
      dataset: { testid: "heatmap-highlight", variable: h.variable, severity: h.severity },
      title: `${h.variable}: ${[...h.kinds].map(kindLabel).join(", ")} since step ${h.step}`,
    },
    el("bdi", { class: "hl-name" }, h.variable),
    el("span", { class: "hl-since" }, `since ${fmtInt(h.step)}`)));
  $("heat-hl-list").replaceChildren(...items);
  $("heat-hl").hidden = items.length === 0;
}

async function setMuted(kind, muted) {
  const id = state.selected;
  if (id === null || state.rulesBusy.has(kind)) return;
  const note = $("rules-note");
  state.rulesBusy.add(kind);
  scheduleAlerts();
  try {
    const res = await patchJSON(`/api/runs/${id}/alert-rules/${encodeURIComponent(kind)}`, { muted });
    if (id !== state.selected) return;
    let rule = null;
    if (res && typeof res === "object" && typeof res.muted === "boolean") rule = res;
    else if (res && res[kind] && typeof res[kind] === "object") rule = res[kind];
    else if (res && res.rule && typeof res.rule === "object") rule = res.rule;
    state.rules = { ...(state.rules || {}), [kind]: { ...((state.rules || {})[kind] || {}), ...(rule || { muted }) } };
    delete note.dataset.error;
  } catch (e) {
    if (id !== state.selected) return;
    note.dataset.error = "1";
    note.hidden = false;
    note.textContent = `Could not ${muted ? "mute" : "unmute"} ${kindLabel(kind)} — ${e.status ? `${e.status}: ` : ""}${e.message}`;
  } finally {
    state.rulesBusy.delete(kind);
    scheduleAlerts();
  }
}

// Badges of runs that are not selected: fetch their alerts once per connection
// (newest runs first, one request at a time); live `alert` messages keep them current.
let prefetchSeq = 0;
async function prefetchRunAlerts() {
  if (state.alertsRouteMissing) return;
  const seq = ++prefetchSeq;
  for (const r of sortedRuns().slice(0, 20)) {
    if (seq !== prefetchSeq || state.alertsRouteMissing) return;
    if (r.id === state.selected || (r.alerts && typeof r.alerts === "object")) continue; // counts come with the run
    try {
      const list = await getJSON(`/api/runs/${r.id}/alerts`);
      const m = new Map();
      for (const a of list || []) if (a && typeof a.id === "number") m.set(a.id, a);
      // keep live alerts that may have arrived meanwhile
      for (const [k, v] of state.runAlerts.get(r.id) || []) if (!m.has(k)) m.set(k, v);
      state.runAlerts.set(r.id, m);
      scheduleRunList();
    } catch (e) {
      if (e.status === 404 && !/does not exist/.test(e.message)) state.alertsRouteMissing = true; // no such route
      if (e.status === 401 || e.status === 403) return;
    }
  }
}

void ALERT_KINDS;

function maybeAutoSelect() {
  if (state.selected !== null || state.autoSelected || runIdFromHash() !== null) return;
  const first = sortedRuns()[0];
  if (!first) return;
  state.autoSelected = true;
  selectRun(first.id);
}

// The websocket is down: show what REST has meanwhile (once per outage).
let restFallbackDone = false;
function restFallback() {
  if (restFallbackDone) return;
  restFallbackDone = true;
  if (state.selected !== null && !state.store) syncRun();
  if (state.runs.size === 0) {
    getJSON("/api/runs").then((runs) => {
      for (const r of runs || []) upsertRun(r);
      maybeAutoSelect();
    }).catch((e) => {
      if (e.status === 401 || e.status === 403) {
        $("placeholder-text").textContent =
          "Not signed in: open the login link printed by `gradwatch serve` (it sets a cookie; the token never goes in page URLs).";
      }
    });
  }
}

const live = new LiveSocket({
  onOpen: () => {
    restFallbackDone = false;
    // New socket: (re)subscribe and backfill from REST since the last step seen.
    if (state.selected !== null) syncRun();
  },
  onMessage,
  onState: (s) => {
    setConn(s);
    if (s.state === "reconnecting") restFallback();
  },
  onFatal: showFatal,
});

// ------------------------------------------------------------------ start

function start() {
  if (!window.Plotly) {
    showFatal("plotly.min.js did not load from /static/plotly.min.js; charts cannot be drawn. Is the gradwatch server installed with its [server] extras?");
  }
  const id = runIdFromHash();
  if (id !== null) selectRun(id); // fetches once the socket is up (or has failed)
  live.connect();
}

// Expose a little more for debugging from the console (not a stable API).
gw._debug = { state, charts, live, errorDetail };

start();
