// The run model's merges (client/run-model.js): alerts, rules and commands of the selected run,
// and every run's alerts for the run list badges.
import assert from "node:assert/strict";
import { test } from "node:test";

import { runModel, subscribe } from "../../../client/run-model.js";
import { state } from "../../../client/state.js";

test("an alert update older than the one held is dropped", () => {
  runModel.select(1);
  assert.equal(runModel.mergeAlert({ id: 5, state: "open", updated_at: 20 }), true);
  assert.equal(runModel.mergeAlert({ id: 5, state: "resolved", updated_at: 10 }), false);
  assert.equal(state.alerts.get(5).state, "open");
  assert.equal(runModel.mergeAlert({ id: 5, state: "resolved", resolved_step: 40, updated_at: 30 }), true);
  assert.deepEqual(state.alerts.get(5), { id: 5, state: "resolved", resolved_step: 40, updated_at: 30 });
  assert.equal(runModel.mergeAlert(null), false);
});

test("a live alert of any run is kept for its badge; the selected run's is merged", () => {
  runModel.select(1);
  let runs = 0;
  const off = subscribe("runs", () => (runs += 1));
  assert.equal(runModel.alertSeen(2, { id: 9, state: "open" }), false);
  assert.equal(state.alerts.size, 0);
  assert.equal(runModel.alertSeen(1, { id: 3, state: "open" }), true);
  assert.deepEqual([...state.alerts.keys()], [3]);
  assert.deepEqual([...state.runAlerts.get(2).keys()], [9]);
  runModel.runAlertsFetched(2, [{ id: 8, state: "resolved" }, { bogus: true }]);
  assert.deepEqual([...state.runAlerts.get(2).keys()].sort(), [8, 9]); // the live one stays
  assert.equal(runs, 3);
  off();
});

test("loaded alerts replace the selected run's and fill its badge", () => {
  runModel.select(4);
  runModel.mergeAlert({ id: 1 });
  runModel.loadedAlerts([{ id: 2, state: "open" }]);
  assert.deepEqual([...state.alerts.keys()], [2]);
  assert.deepEqual([...state.runAlerts.get(4).keys()], [2]);
});

test("rules: loaded, pushed live, confirmed one by one; selecting a run drops them", () => {
  runModel.select(1);
  runModel.loadedRules(true, { nonfinite: { muted: false, params: { x: 1 } } });
  runModel.mergeRules({ diverging: { muted: true, params: {} } });
  runModel.setRuleBusy("nonfinite", true);
  runModel.mergeRule("nonfinite", { muted: true });
  assert.deepEqual(state.rules.nonfinite, { muted: true, params: { x: 1 } });
  assert.equal(state.rules.diverging.muted, true);
  assert.deepEqual([...state.rulesBusy], ["nonfinite"]);
  runModel.setRuleBusy("nonfinite", false);
  assert.equal(state.rulesBusy.size, 0);
  runModel.loadedRules(false, null);
  assert.equal(state.rulesAvailable, false);
  runModel.select(2);
  assert.equal(state.rules, null);
});

test("a command never goes back to pending", () => {
  runModel.select(1);
  runModel.mergeCommand({ id: 1, type: "pause", state: "pending" });
  runModel.mergeCommand({ id: 1, state: "applied", applied_step: 12 });
  runModel.mergeCommand({ id: 1, state: "pending" }); // a late echo of the POST
  assert.deepEqual(state.commands.get(1), { id: 1, type: "pause", state: "applied", applied_step: 12 });
  runModel.mergeCommand({ type: "stop" }); // no id: ignored
  assert.equal(state.commands.size, 1);
  runModel.select(1);
  assert.equal(state.commands.size, 0);
});
