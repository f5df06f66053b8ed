// The run model: the one writer of the runs seen and of the selected run's
// state (the `state` object of state.js, which the views read). It changes that
// state only in the methods below and tells the views what changed:
//   "runs"     the run list's data changed (a summary, a step)
//   "head"     the selected run's detail changed (status, clip, labels ...)
//   "reload"   the selected run must be loaded afresh (its watched variables changed), with its id
// Views subscribe(topic, fn); notifications are synchronous, in subscription order.

import { RunFeed } from "./follow.js";
import { gw, state } from "./state.js";

const listeners = new Map(); // topic -> [fn]
const COMMAND_STATE_RANK = { pending: 0, applied: 1, rejected: 1 };

/** Call fn(...args) on every notify(topic, ...args); returns the unsubscribe function. */
export function subscribe(topic, fn) {
  if (!listeners.has(topic)) listeners.set(topic, []);
  listeners.get(topic).push(fn);
  return () => {
    const fns = listeners.get(topic);
    fns.splice(fns.indexOf(fn), 1);
  };
}

function notify(topic, ...args) {
  for (const fn of [...(listeners.get(topic) || [])]) fn(...args);
}

/** The RunSummary of a RunDetail. */
function summaryOf(d) {
  const { id, name, status, step, created_at, updated_at } = d;
  return { id, name, status, step, created_at, updated_at };
}

export const runModel = {
  /** A RunSummary (REST or a `run`/`runs` message): keep it, and the selected run's detail, current. */
  upsertRun(r) {
    if (!r || typeof r.id !== "number") return;
    const old = state.runs.get(r.id) || {};
    state.runs.set(r.id, { ...old, ...r });
    if (r.id === state.selected && state.detail) {
      const before = state.detail.variable_sets || [];
      if (Array.isArray(r.variable_sets) && r.variable_sets.length !== before.length) {
        // The run's watched variables changed (a recompile): load it afresh, with its new variables.
        state.feed.close();
        state.feed = null;
        notify("reload", r.id);
        return;
      }
      const { variables, bn_layers, ...rest } = r; // a `run` message has neither; keep ours
      void variables;
      void bn_layers;
      state.detail = { ...state.detail, ...rest };
      notify("head");
    }
    notify("runs");
  },

  /** Runs no longer listed by the server (other than the selected one) are forgotten. */
  keepRuns(ids) {
    for (const id of [...state.runs.keys()]) if (!ids.has(id) && id !== state.selected) state.runs.delete(id);
    notify("runs");
  },

  /** The newest selected run's step reached `step`: the run list shows it. */
  noteStep(step) {
    const r = state.runs.get(state.selected);
    if (r && step !== null && (r.step === null || r.step === undefined || step > r.step)) {
      r.step = step;
      notify("runs");
    }
  },

  /** Select run `id`: everything about the last one is dropped, and its live data is held until loaded. */
  select(id) {
    if (state.feed) state.feed.close();
    state.selected = id;
    state.detail = null;
    state.feed = new RunFeed(id);
    state.commands.clear();
    state.alerts.clear();
    state.rules = null;
    state.rulesBusy.clear();
    gw.runId = id;
    gw.steps = 0;
    gw.lastStep = null;
  },

  /** The page picked the newest run by itself (it does so once). */
  markAutoSelected() {
    state.autoSelected = true;
  },

  /** A (re)load of the selected run starts; returns its feed and the load's token. */
  beginLoad() {
    return { feed: state.feed, token: state.feed.begin() };
  },

  /** The selected run's load answered: its detail and metrics, then the live data held meanwhile. Returns true when its store is new. */
  loaded(detail, metrics) {
    state.detail = detail;
    state.runs.set(detail.id, { ...(state.runs.get(detail.id) || {}), ...summaryOf(detail) });
    return state.feed.merge(detail, metrics);
  },

  /** The selected run's alerts as loaded, also kept for its run list badge. */
  loadedAlerts(alerts) {
    state.alerts.clear();
    for (const a of alerts) runModel.mergeAlert(a);
    state.runAlerts.set(state.selected, new Map(state.alerts));
  },

  /** Merge one alert of the selected run; false when it is older than the one held. */
  mergeAlert(a) {
    if (!a || typeof a.id !== "number") return false;
    const old = state.alerts.get(a.id);
    if (old && (old.updated_at || 0) > (a.updated_at || 0)) return false; // an older update arrived late
    state.alerts.set(a.id, { ...(old || {}), ...a });
    return true;
  },

  /** A live alert of any run: kept for its run list badge. Returns true when the selected run's alerts changed. */
  alertSeen(runId, a) {
    let m = state.runAlerts.get(runId);
    if (!m) state.runAlerts.set(runId, (m = new Map()));
    m.set(a.id, { ...(m.get(a.id) || {}), ...a });
    notify("runs");
    return runId === state.selected && runModel.mergeAlert(a);
  },

  /** Alerts fetched for a run that is not selected (its badge); live ones that came meanwhile are kept. */
  runAlertsFetched(runId, list) {
    const m = new Map();
    for (const a of list || []) if (a && typeof a.id === "number") m.set(a.id, a);
    for (const [k, v] of state.runAlerts.get(runId) || []) if (!m.has(k)) m.set(k, v);
    state.runAlerts.set(runId, m);
    notify("runs");
  },

  /** This server has no alerts route: the page stops asking. */
  noAlertsRoute() {
    state.alertsRouteMissing = true;
  },

  /** A rule's PATCH is (or is no longer) in flight. */
  setRuleBusy(kind, busy) {
    if (busy) state.rulesBusy.add(kind);
    else state.rulesBusy.delete(kind);
  },

  /** One rule as the server confirmed it, over the one held. */
  mergeRule(kind, rule) {
    state.rules = { ...(state.rules || {}), [kind]: { ...((state.rules || {})[kind] || {}), ...rule } };
  },

  /** Merge one command of the selected run; a command never goes back to pending. */
  mergeCommand(c) {
    if (!c || typeof c.id !== "number") return;
    const old = state.commands.get(c.id);
    if (old && (COMMAND_STATE_RANK[old.state] ?? 0) > (COMMAND_STATE_RANK[c.state] ?? 0)) return;
    state.commands.set(c.id, { ...(old || {}), ...c });
  },

  /** The selected run's alert rules as loaded (`available`: the server has the route; `rules` null: none sent). */
  loadedRules(available, rules) {
    state.rulesAvailable = available;
    if (rules) state.rules = { ...rules };
  },

  /** Rules of the selected run pushed live (an `alert_rules` message): merged over the ones held. */
  mergeRules(rules) {
    state.rules = { ...(state.rules || {}), ...rules };
  },

  /** Steps of the selected run's applied rewinds (the charts mark them). */
  setRewinds(steps) {
    if (state.store) state.store.rewinds = steps;
  },
};
