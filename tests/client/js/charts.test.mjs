// The charts' pure logic: the y-axis choice (chart-base.js), the summary across variables
// (chart-ratio.js) and the heatmap's bounded window of columns (heat-window.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { LOG_SPAN, fin, pos, readableScale } from "../../../client/chart-base.js";
import { spread } from "../../../client/chart-ratio.js";
import { HeatWindow } from "../../../client/heat-window.js";
import { RunStore } from "../../../client/store.js";

test("a positive series spanning more than LOG_SPAN gets a log axis", () => {
  assert.equal(readableScale([1, 2, 3]).key, "linear");
  assert.equal(readableScale([1, 10 * LOG_SPAN]).key, "log");
  assert.equal(readableScale([1, 4e22, null, NaN]).key, "log"); // non-finite values are ignored
  assert.equal(readableScale([0, 4e22]).key, "linear"); // a zero cannot go on a log axis
  assert.equal(readableScale([]).key, "linear");
});

test("a signed series with a far outlier keeps its 1st-99th percentile range", () => {
  const values = Array.from({ length: 200 }, (_, i) => Math.sin(i));
  values[100] = -3e9;
  const s = readableScale(values);
  assert.ok(s.key.startsWith("robust:"), s.key);
  assert.equal(s.axis.autorange, false);
  const [lo, hi] = s.axis.range;
  assert.ok(lo > -2 && lo < -1 && hi > 1 && hi < 2, `${lo} ${hi}`);
  assert.equal(readableScale(Array.from({ length: 200 }, (_, i) => Math.sin(i))).key, "linear");
});

test("value filters for log and linear traces", () => {
  assert.deepEqual([0, -1, 2, Infinity, NaN, null].map(pos), [null, null, 2, null, null, null]);
  assert.deepEqual([0, -1, Infinity, null].map(fin), [0, -1, null, null]);
});

test("many variables' ratios read as min / upper median / max of the positive finite ones", () => {
  assert.deepEqual(spread([3, 1, 2, null, 0, NaN, -1]), { lo: 1, mid: 2, hi: 3 });
  assert.deepEqual(spread([1, 2, 3, 4]), { lo: 1, mid: 3, hi: 4 });
  assert.equal(spread([null, 0]), null);
});

function storeWith(V, steps) {
  const s = new RunStore({ id: 1, variables: Array.from({ length: V }, (_, v) => `v${v}`) });
  for (let i = 0; i < steps; i++) {
    s.addRecord({ step: i, global_norm: 1, grad_norm: Array.from({ length: V }, (_, v) => (i === 3 && v === 0 ? "NaN" : 10 ** v)) });
  }
  return s;
}

test("the heatmap keeps fewer columns for more variables, the newest ones", () => {
  const small = new HeatWindow(storeWith(2, 10));
  assert.equal(small.cols, 2000);
  assert.equal(new HeatWindow(storeWith(5000, 1)).cols, 300);
  assert.equal(new HeatWindow(storeWith(100000, 0)).cols, 200);
  assert.deepEqual(small.x, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual([small.zmin, small.zmax], [0, 1]); // log10 of the norms
  assert.deepEqual([small.nanX, small.nanY], [[3], ["v0"]]);
});

test("appending new records gives the same window as rebuilding it", () => {
  const s = storeWith(3, 1990);
  const w = new HeatWindow(s);
  for (let i = 1990; i < 2100; i++) s.addRecord({ step: i, global_norm: 1, grad_norm: [1, "Infinity", 100] });
  assert.equal(w.behind, true);
  w.catchUp();
  assert.equal(w.behind, false);
  const fresh = new HeatWindow(s);
  assert.equal(w.x.length, w.cols);
  assert.deepEqual(w.x, fresh.x);
  assert.deepEqual(w.z, fresh.z);
  assert.deepEqual(w.nanX, fresh.nanX);
});

test("an empty probe panel says what it waits for", async () => {
  const { emptyNote } = await import("../../../client/chart-probe.js");
  const s = new RunStore({ id: 1, variables: ["v"], relu_layers: ["dense"] });
  assert.match(emptyNote(s), /^Waiting for the first probe/);
  s.addProbe({ step: 100, dead_relu: { dense: 0.2 } });
  assert.equal(emptyNote(s), null);
  const none = new RunStore({ id: 1, variables: ["v"] });
  none.addProbe({ step: 100 });
  assert.match(emptyNote(none), /no ReLU or BatchNorm layers/);
});
