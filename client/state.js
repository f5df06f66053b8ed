// The page's state, shared by its modules: every run seen, and everything
// about the selected one. Also the test/automation hook window.gradwatch.

// Test/automation hook, kept current.
export const gw = { steps: 0, lastStep: null, runId: null, connected: false };
window.gradwatch = gw;

export const state = {
  runs: new Map(), // id -> RunSummary (+ detail fields from `run` messages)
  selected: null, // run id
  detail: null, // RunDetail of the selected run
  store: null, // RunStore of the selected run
  commands: new Map(), // id -> CommandView (selected run)
  buffering: false,
  buffer: [], // live step records held while REST loads
  probeBuffer: [], // live probe batches held while REST loads
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
  picked: new Set(), // run ids ticked for comparison
};

/** What we know of the selected run: its RunDetail once loaded, else its summary (or undefined). */
export function selectedRun() {
  return state.detail || state.runs.get(state.selected);
}
