// The alert helpers (client/alerts.js) on the AlertView the protocol sends (state, resolved_step).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  alertLayers, bannerAlert, byNewest, evidenceText, isOpen, kindLabel, matchVariables, mergeHighlights,
  severityClass, stepRange, summarize, worse,
} from "../../../client/alerts.js";
import { ALERT_KINDS, ALERT_LABELS, ALERT_STATES, SEVERITIES } from "../../../client/protocol.js";

function alert(id, extra = {}) {
  return {
    id, run_id: 1, kind: "exploding_gradients", severity: "warning", step: 10, last_step: 10, layer: null,
    layers: [], evidence: {}, message: "", remedies: [], count: 1, created_at: 1, updated_at: 1,
    state: "open", resolved_step: null, latest: null, ...extra,
  };
}

test("open and resolved follow the protocol's alert state", () => {
  assert.deepEqual([...ALERT_STATES], ["open", "resolved"]);
  assert.equal(isOpen(alert(1)), true);
  assert.equal(isOpen(alert(1, { state: "resolved", resolved_step: 30 })), false);
  assert.equal(isOpen(null), false);
});

test("a resolved alert leaves the banner and the run list badge", () => {
  const open = alert(1, { severity: "warning" });
  const resolved = alert(2, { severity: "critical", state: "resolved", resolved_step: 40 });
  assert.equal(bannerAlert([open, resolved], () => false), open);
  assert.deepEqual(summarize(new Map([[1, open], [2, resolved]])), { count: 1, severity: "warning", kinds: ["exploding_gradients"] });
  assert.deepEqual(summarize(null), { count: 0, severity: null, kinds: [] });
});

test("the banner shows the worst unmuted open alert, the newest among equals", () => {
  const a = alert(1, { severity: "warning", last_step: 50 });
  const b = alert(2, { severity: "critical", kind: "nonfinite", last_step: 20 });
  const c = alert(3, { severity: "critical", kind: "diverging", last_step: 30 });
  assert.equal(bannerAlert([a, b, c], () => false), c);
  assert.equal(bannerAlert([a, b, c], (k) => k !== "exploding_gradients"), a);
  assert.equal(bannerAlert([], () => false), null);
  assert.deepEqual([a, b, c].sort(byNewest).map((x) => x.id), [1, 3, 2]);
});

test("severities rank as the protocol lists them", () => {
  assert.equal(worse("info", SEVERITIES.at(-1)), SEVERITIES.at(-1));
  assert.equal(worse("critical", "warning"), "critical");
  assert.equal(worse(null, "info"), "info");
  assert.equal(worse(null, null), null);
  assert.equal(severityClass("critical"), "critical");
  assert.equal(severityClass("bogus"), "warning");
});

test("every kind has the protocol's label; an unknown kind is spelled out", () => {
  for (const k of ALERT_KINDS) assert.equal(kindLabel(k), ALERT_LABELS[k]);
  assert.equal(kindLabel("new_kind"), "new kind");
});

test("layers point at heatmap rows, merged per variable", () => {
  assert.deepEqual(alertLayers({ layer: "dense", layers: ["dense", "", null, "bn"] }), ["dense", "bn"]);
  assert.deepEqual(alertLayers({ layer: "x", layers: [] }), ["x"]);
  const vars = ["model/dense/kernel", "model/dense/bias", "dense_1/kernel", "bn/gamma"];
  assert.deepEqual(matchVariables(["dense_1"], vars), ["dense_1/kernel"]);
  assert.deepEqual(matchVariables(["dense"], vars), ["model/dense/kernel", "model/dense/bias"]);
  assert.deepEqual(matchVariables(["nothing"], vars), []);
  const merged = mergeHighlights([
    { variable: "v", step: 9, severity: "warning", kind: "a" },
    { variable: "v", step: 4, severity: "critical", kind: "b" },
    { variable: "w", step: 1, severity: "info", kind: "a" },
  ]);
  assert.deepEqual(merged, [
    { variable: "v", step: 4, severity: "critical", kind: "a", kinds: ["a", "b"] },
    { variable: "w", step: 1, severity: "info", kind: "a", kinds: ["a"] },
  ]);
});

test("evidence and step ranges read as text", () => {
  assert.equal(evidenceText({ global_norm: 1234567, ratio: "Infinity", note: null, layer: "d" }), "global norm 1.23e6 · ratio ∞ · layer d");
  assert.equal(evidenceText(null), "");
  assert.equal(stepRange({ step: 5, last_step: 5 }), "step 5");
  assert.equal(stepRange({ step: 5, last_step: 1200 }), "steps 5–1,200");
});
