// The page's state, read by its modules: every run seen, and everything
// about the selected one. The run model (run-model.js) writes the runs and the
// selected run's fields. Also the test/automation hook window.gradwatch.

// Test/automation hook, kept current (app.js puts it on window.gradwatch: no DOM here at import).
export const gw = { steps: 0, lastStep: null, runId: null, connected: false };

export const state = {
  runs: new Map(), // id -> RunSummary (+ detail fields from `run` messages)
  selected: null, // run id
  detail: null, // RunDetail of the selected run
  feed: null, // RunFeed of the selected run (follow.js): its store, and live data held while it loads
  /** The RunStore of the selected run, null until loaded. */
  get store() {
    return this.feed ? this.feed.store : null;
  },
  commands: new Map(), // id -> CommandView (selected run)
  fatal: false,
  autoSelected: false,
  alerts: new Map(), // id -> AlertView (selected run)
  rules: null, // {kind: {muted, params}} of the selected run; null until loaded
  rulesAvailable: true, // false when the server has no alert-rules route
  rulesBusy: new Set(), // kinds with a PATCH in flight
  runAlerts: new Map(), // run id -> Map(alert id -> AlertView): every run's alerts seen (run list badges)
  alertsRouteMissing: false,
  picked: new Set(), // run ids ticked for comparison
};

/** What we know of the selected run: its RunDetail once loaded, else its summary (or undefined). */
export function selectedRun() {
  return state.detail || state.runs.get(state.selected);
}
