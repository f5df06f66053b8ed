// Selecting a run (also via #run=ID) and keeping it in sync with the server.
//
// Selecting a run (and every websocket reconnect while a run is selected):
//   1. send {"type":"subscribe"} and buffer live `steps` for that run,
//   2. fetch /api/runs/{id}, /api/runs/{id}/metrics (since the last step we
//      already have) and /api/runs/{id}/commands,
//   3. merge REST data, then the buffer; duplicates (by step) are dropped.
// After that live records go straight into the RunStore (messages.js) and the
// charts render them once per animation frame.

import { mergeAlert, renderAlertsNow, scheduleAlerts } from "./alert-panel.js";
import { setExportLinks } from "./export-links.js";
import { fillClipForm, fillLr, mergeCommand, renderCommands, resetControls, rewindSteps } from "./controls.js";
import { renderNanBanner } from "./nan-banner.js";
import { resetRunLabels } from "./run-labels.js";
import { lastLr, renderRunHead, updateProgress } from "./run-head.js";
import { renderRunList, scheduleRunList, sortedRuns } from "./run-list.js";
import { gw, state } from "./state.js";
import { setNotice } from "./status.js";
import { RunStore } from "./store.js";
import { $, getJSON, isAuthError } from "./util.js";

const METRICS_MAX_POINTS = 2000;

let charts = null;
let live = null;

export function initRunSync(theCharts, theLive) {
  charts = theCharts;
  live = theLive;
  window.addEventListener("hashchange", () => {
    const id = runIdFromHash();
    if (id !== null && id !== state.selected) selectRun(id);
  });
}

export function runIdFromHash() {
  const m = /(?:^#|&)run=(\d+)/.exec(location.hash);
  return m ? Number(m[1]) : null;
}

/** A RunSummary (REST or a `run`/`runs` message): keep it, and the selected run's header, current. */
export function upsertRun(r) {
  if (!r || typeof r.id !== "number") return;
  const old = state.runs.get(r.id) || {};
  state.runs.set(r.id, { ...old, ...r });
  if (r.id === state.selected && state.detail) {
    const before = state.detail.variable_sets || [];
    if (Array.isArray(r.variable_sets) && r.variable_sets.length !== before.length) {
      // The run's watched variables changed (a recompile): load it afresh, with its new variables.
      state.store = null;
      selectRun(r.id);
      return;
    }
    const { variables, bn_layers, ...rest } = r; // a `run` message has neither; keep ours
    void variables;
    void bn_layers;
    state.detail = { ...state.detail, ...rest };
    renderRunHead();
  }
  scheduleRunList();
}

export function selectRun(id) {
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
  state.probeBuffer = []; // the previous run's, not this one's
  state.buffering = true;
  charts.reset();
  charts.setHighlights([]);
  $("card-probe").hidden = true;
  gw.runId = id;
  gw.steps = 0;
  gw.lastStep = null;
  if (runIdFromHash() !== id) history.replaceState(null, "", `#run=${id}`);
  resetControls();
  resetRunLabels();
  $("placeholder").hidden = true;
  $("run-view").hidden = false;
  const known = state.runs.get(id);
  $("run-name").textContent = known ? known.name : `Run ${id}`;
  $("run-id").textContent = `#${id}`;
  setExportLinks(id);
  setNotice("Loading…");
  renderNanBanner();
  renderCommands();
  renderAlertsNow();
  renderRunList();
  syncRun();
}

/** With no run chosen (none in the URL either), select the newest run once. */
export function maybeAutoSelect() {
  if (state.selected !== null || state.autoSelected || runIdFromHash() !== null) return;
  const first = sortedRuns()[0];
  if (!first) return;
  state.autoSelected = true;
  selectRun(first.id);
}

/**
 * Subscribe (when connected), fetch the run, its metrics since our last step
 * and its commands, then merge the live records buffered meanwhile.
 */
export async function syncRun() {
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
    // omit_empty: all-zero NaN/Inf counts and unmeasured update ratios stay off the wire (absent = 0 / null).
    let url = `/api/runs/${id}/metrics?max_points=${METRICS_MAX_POINTS}&omit_empty=true`;
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
    for (const p of state.probeBuffer) store.addProbe(p);
    state.probeBuffer = [];
    state.buffering = false;
    for (const c of commands || []) mergeCommand(c);
    store.rewinds = rewindSteps();
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
    else if (isAuthError(e)) setNotice(`Not signed in: open the login link printed by \`gradwatch serve\`. (${e.message})`, "error");
    else setNotice(`Could not load run ${id}: ${e.message}. Retrying on reconnect.`, "error");
  }
}

/** GET that may legitimately fail (a route this server does not have yet): {ok, status, body}. */
async function optionalJSON(url) {
  try {
    return { ok: true, status: 200, body: await getJSON(url) };
  } catch (e) {
    if (isAuthError(e)) throw e;
    return { ok: false, status: e.status || 0, body: null, message: e.message };
  }
}

function summaryOf(d) {
  const { id, name, status, step, created_at, updated_at } = d;
  return { id, name, status, step, created_at, updated_at };
}

// The websocket is down: show what REST has meanwhile (once per outage).
let restFallbackDone = false;

export function restFallback() {
  if (restFallbackDone) return;
  restFallbackDone = true;
  if (state.selected !== null && !state.store) syncRun();
  if (state.runs.size === 0) {
    getJSON("/api/runs").then((runs) => {
      for (const r of runs || []) upsertRun(r);
      maybeAutoSelect();
    }).catch((e) => {
      if (isAuthError(e)) {
        $("placeholder-text").textContent =
          "Not signed in: open the login link printed by `gradwatch serve` (it sets a cookie; the token never goes in page URLs).";
      }
    });
  }
}

/** A new socket is up: the next outage falls back to REST again. */
export function connected() {
  restFallbackDone = false;
}
