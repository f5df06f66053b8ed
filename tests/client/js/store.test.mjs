// RunStore (client/store.js): REST columns and live records merged by step, without duplicates.
import assert from "node:assert/strict";
import { test } from "node:test";

import { SCALARS, RunStore, optimizerGroups } from "../../../client/store.js";
import { STEP_FIELDS } from "../../../client/stepfields.js";

const DETAIL = { id: 7, variables: ["dense/kernel", "dense/bias"], bn_layers: ["bn"] };

function record(step, extra = {}) {
  return {
    step, epoch: 0, time: step, loss: 1 / (step + 1), lr: 0.01, global_norm: 2, clip_mode: "global_norm",
    clip_threshold: 1, clip_scale: 0.5, clipped: true, grad_norm: [1, "NaN"], grad_nan: [0, 1], grad_inf: [0, 0],
    bn: [[0.1, 0, 0, 0, 2, 0, 0, 0]], ...extra,
  };
}

test("every scalar step field is a column, under the charts' short names", () => {
  const names = STEP_FIELDS.filter((f) => f.shape === "scalar").map((f) => f.name);
  assert.deepEqual(SCALARS.map(([, f]) => f.name), names.filter((n) => n !== "step" && n !== "clip_mode"));
  const s = new RunStore(DETAIL);
  for (const [key] of SCALARS) assert.ok(Array.isArray(s.c[key]), key);
  for (const key of ["gnorm", "thr", "scale", "clipfrac", "sps", "wnf", "lnf", "micro", "accnorm"]) assert.ok(key in s.c, key);
});

test("a live record is kept once; wire NaN becomes a number; flags are 0/1", () => {
  const s = new RunStore(DETAIL);
  assert.equal(s.addRecord(record(0)), true);
  assert.equal(s.addRecord(record(0)), false);
  assert.equal(s.duplicates, 1);
  assert.equal(s.addRecord(record(1, { clipped: false })), true);
  assert.deepEqual(s.c.step, [0, 1]);
  assert.deepEqual(s.c.clipped, [1, 0]);
  assert.ok(Number.isNaN(s.gn[1][0]));
  assert.deepEqual(s.nf[1], [1, 1]);
  assert.equal(s.firstNonfinite.step, 0);
  assert.deepEqual(s.bnMean[0], [0.1, 0.1]);
  assert.deepEqual(s.bnVar[0], [2, 2]);
  assert.equal(s.clippedCount, 1);
  assert.equal(s.c.clipShare[1], 0.5);
  assert.equal(s.lastStep, 1);
});

test("REST columns, then live records after the last step only", () => {
  const s = new RunStore(DETAIL);
  const kept = s.addColumns({
    step: [0, 1, 1, 2], loss: [1, 0.5, 0.6, 0.4], global_norm: [1, 2, 3, 4],
    grad_norm: { "dense/kernel": [1, 1, 1, 1] }, nonfinite: { "dense/bias": [0, 2, 0, 0] },
    gaps: [{ from_step: 5, to_step: 9, dropped: 4 }],
  });
  assert.equal(kept, 4); // a downsampled bucket may report two points at one step
  assert.equal(s.addRecord(record(2)), false);
  assert.equal(s.addRecord(record(3)), true);
  assert.deepEqual(s.c.step, [0, 1, 1, 2, 3]);
  assert.deepEqual(s.gn[1].slice(0, 4), [null, null, null, null]);
  assert.equal(s.nfByVar[1], 2 + 1);
  assert.deepEqual(s.c.wnf, [0, 0, 0, 0, 0]); // counts absent from REST are 0
  assert.deepEqual(s.gaps, [{ from_step: 5, to_step: 9, dropped: 4 }]);
  s.mergeGaps([{ from_step: 5, to_step: 9, dropped: 4 }]);
  assert.equal(s.gaps.length, 1);
});

test("the store keeps a bounded window: older points are trimmed in chunks", () => {
  const s = new RunStore({ id: 1, variables: ["v"] });
  const n = s.cap + Math.max(256, s.cap / 10);
  for (let i = 0; i < n; i++) s.addRecord({ step: i, global_norm: 1, grad_norm: [1] });
  assert.equal(s.received, n);
  assert.equal(s.length, s.cap);
  assert.equal(s.base, n - s.cap);
  assert.equal(s.end, n);
  assert.equal(s.c.step[0], n - s.cap);
  for (const a of Object.values(s.c)) assert.equal(a.length, s.cap);
});

test("probes merge by step, also out of order", () => {
  const s = new RunStore(DETAIL);
  assert.equal(s.addProbe({ step: 10, dead_relu: { dense: 0.5 } }), true);
  assert.equal(s.addProbe({ step: 10, dead_relu: { dense: 0.5 } }), false);
  assert.equal(s.addProbe({ step: 5, bn_gap: { bn: 0.2 } }), true);
  assert.deepEqual(s.probe.step, [5, 10]);
  assert.deepEqual(s.probe.dead_relu.get("dense"), [null, 0.5]);
  assert.deepEqual(s.probe.bn_gap.get("bn"), [0.2, null]);
  assert.equal(s.hasProbe, true);
});

test("optimizer groups: contiguous, covering every variable, more than one", () => {
  assert.deepEqual(optimizerGroups({ optimizer_groups: '{"d": 2, "g": 1}' }, 3),
    [{ name: "d", start: 0, end: 2 }, { name: "g", start: 2, end: 3 }]);
  assert.deepEqual(optimizerGroups({ optimizer_groups: '{"d": 2}' }, 2), []);
  assert.deepEqual(optimizerGroups({ optimizer_groups: '{"d": 2, "g": 2}' }, 3), []);
  assert.deepEqual(optimizerGroups({ optimizer_groups: "not json" }, 3), []);
  assert.deepEqual(optimizerGroups(undefined, 3), []);
});

test("variable sets: a record of a later set is read by each variable's position", () => {
  const s = new RunStore({ id: 1, variables: ["a", "b"], variable_sets: [
    { from_step: 0, variables: [1] }, { from_step: 2, variables: [0, 1] }] });
  s.addRecord({ step: 0, grad_norm: [5] });
  s.addRecord({ step: 2, grad_norm: [1, 2] });
  assert.deepEqual(s.gn, [[null, 1], [5, 2]]);
});
