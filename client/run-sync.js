// Selecting a run (also via #run=ID) and keeping it in sync with the server.
//
// Selecting a run (and every websocket reconnect while a run is selected):
//   1. send {"type":"subscribe"} and hold live `steps` for that run (follow.js),
//   2. fetch /api/runs/{id}, /api/runs/{id}/metrics (since the last step we
//      already have) and /api/runs/{id}/commands,
//   3. merge REST data, then the records held; duplicates (by step) are dropped.
// After that live records go straight into the RunStore (messages.js) and the
// charts render them once per animation frame.

import { renderAlertsNow, scheduleAlerts } from "./alert-panel.js";
import { setExportLinks } from "./export-links.js";
import { fillClipForm, fillLr, renderCommands, resetControls, rewindSteps } from "./controls.js";
import { renderNanBanner } from "./nan-banner.js";
import { resetRunLabels } from "./run-labels.js";
import { lastLr, renderRunHead, updateProgress } from "./run-head.js";
import { renderRunList, scheduleRunList, sortedRuns } from "./run-list.js";
import { runModel, subscribe } from "./run-model.js";
import { state } from "./state.js";
import { setNotice } from "./status.js";
import { $, getJSON, isAuthError } from "./util.js";

let charts = null;
let live = null;

export function initRunSync(theCharts, theLive) {
  charts = theCharts;
  live = theLive;
  window.addEventListener("hashchange", () => {
    const id = runIdFromHash();
    if (id !== null && id !== state.selected) selectRun(id);
  });
  subscribe("reload", selectRun); // the model dropped the selected run's store: select it afresh
}

export function runIdFromHash() {
  const m = /(?:^#|&)run=(\d+)/.exec(location.hash);
  return m ? Number(m[1]) : null;
}

export function selectRun(id) {
  if (state.selected === id && state.store) return;
  runModel.select(id);
  charts.reset();
  charts.setHighlights([]);
  $("card-probe").hidden = true;
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
  runModel.markAutoSelected();
  selectRun(first.id);
}

/**
 * Subscribe (when connected), fetch the run, its metrics since our last step
 * and its commands, then merge the live records held meanwhile (follow.js).
 */
export async function syncRun() {
  const id = state.selected;
  if (id === null) return;
  const { feed, token } = runModel.beginLoad();
  // While the first connection is being made, wait for it: onOpen subscribes
  // and then fetches. If it fails, onState falls back to REST alone.
  if (!live.connected && live.firstAttemptPending) return;
  live.send({ type: "subscribe", run_id: id }); // FIRST, so nothing falls between REST and live
  try {
    const got = await feed.load(token, {
      refreshDetail: true,
      extra: () => [getJSON(`/api/runs/${id}/commands`), optionalJSON(`/api/runs/${id}/alerts`),
        optionalJSON(`/api/runs/${id}/alert-rules`)],
    });
    if (!got || feed !== state.feed) return;
    const { detail, metrics } = got;
    const [commands, alerts, rules] = got.extra;
    const fresh = runModel.loaded(detail, metrics);
    const store = state.store;
    for (const c of commands || []) runModel.mergeCommand(c);
    runModel.setRewinds(rewindSteps());
    if (alerts.ok && Array.isArray(alerts.body)) runModel.loadedAlerts(alerts.body);
    runModel.loadedRules(rules.ok, rules.ok && rules.body && typeof rules.body === "object" ? rules.body : null);
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
    if (!feed.current(token) || feed !== state.feed) return;
    feed.failed();
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

// The websocket is down: show what REST has meanwhile (once per outage).
let restFallbackDone = false;

export function restFallback() {
  if (restFallbackDone) return;
  restFallbackDone = true;
  if (state.selected !== null && !state.store) syncRun();
  if (state.runs.size === 0) {
    getJSON("/api/runs").then((runs) => {
      for (const r of runs || []) runModel.upsertRun(r);
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
