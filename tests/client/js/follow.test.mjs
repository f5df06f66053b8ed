// Load-then-follow (client/follow.js) and the run model (client/run-model.js): live records held
// while a load runs are merged after it; stale loads are dropped; views hear of changes.
import assert from "node:assert/strict";
import { test } from "node:test";

import { MAX_HELD, RunFeed, metricsUrl } from "../../../client/follow.js";
import { runModel, subscribe } from "../../../client/run-model.js";
import { state } from "../../../client/state.js";

const DETAIL = { id: 3, name: "r", status: "running", step: 2, variables: ["v"], bn_layers: [] };
const METRICS = { step: [0, 1, 2], global_norm: [1, 1, 1], grad_norm: { v: [1, 1, 1] } };
const rec = (step) => ({ step, global_norm: 1, grad_norm: [1] });

/** fetch answering each URL with `routes[path]` (JSON), recording the URLs asked. */
function fakeFetch(routes) {
  const asked = [];
  globalThis.fetch = async (url) => {
    asked.push(url);
    const path = url.split("?")[0];
    const body = routes[path];
    return { ok: body !== undefined, status: body === undefined ? 404 : 200, json: async () => body ?? {} };
  };
  return asked;
}

test("the metrics URL asks from the step after the last one held", () => {
  assert.equal(metricsUrl(3, null), "/api/runs/3/metrics?max_points=2000&omit_empty=true");
  assert.equal(metricsUrl(3, 41), "/api/runs/3/metrics?max_points=2000&omit_empty=true&since_step=42");
});

test("live records are held during the load and merged after REST, without duplicates", async () => {
  const asked = fakeFetch({ "/api/runs/3": DETAIL, "/api/runs/3/metrics": METRICS });
  const feed = new RunFeed(3);
  const token = feed.begin();
  assert.equal(feed.offer([rec(2), rec(3)]), 0); // held
  const got = await feed.load(token);
  assert.equal(feed.merge(got.detail, got.metrics), true);
  assert.deepEqual(feed.store.c.step, [0, 1, 2, 3]);
  assert.equal(feed.offer([rec(3), rec(4)]), 1); // straight into the store now
  // a reload asks only for what is new, and keeps the store
  const again = feed.begin();
  const more = await feed.load(again);
  assert.equal(more.detail, null);
  assert.equal(feed.merge(more.detail, { step: [] }), false);
  assert.deepEqual(asked, ["/api/runs/3", "/api/runs/3/metrics?max_points=2000&omit_empty=true",
    "/api/runs/3/metrics?max_points=2000&omit_empty=true&since_step=5"]);
});

test("a newer load or close() makes a load stale", async () => {
  fakeFetch({ "/api/runs/3": DETAIL, "/api/runs/3/metrics": METRICS });
  const feed = new RunFeed(3);
  const first = feed.begin();
  const pending = feed.load(first);
  const second = feed.begin();
  assert.equal(await pending, null);
  feed.close();
  assert.equal(await feed.load(second), null);
});

test("held records are bounded, and a failed load holds again only until a store exists", () => {
  const feed = new RunFeed(3);
  feed.begin();
  feed.offer(Array.from({ length: MAX_HELD + 10 }, (_, i) => rec(i)));
  assert.equal(feed.held.length, MAX_HELD);
  assert.equal(feed.held[0].step, 10);
  feed.failed();
  assert.equal(feed.holding, true); // no store yet
  assert.equal(feed.offerProbe({ step: 1, dead_relu: { d: 0.1 } }), false);
  assert.equal(feed.heldProbes.length, 1);
});

test("the run model writes the run state and notifies its views", async () => {
  fakeFetch({ "/api/runs/3": DETAIL, "/api/runs/3/metrics": METRICS });
  const heard = [];
  const offs = ["runs", "head", "reload"].map((t) => subscribe(t, (...a) => heard.push([t, ...a])));
  runModel.upsertRun({ id: 3, name: "r", status: "running" });
  assert.deepEqual(heard, [["runs"]]);
  runModel.select(3);
  assert.equal(state.selected, 3);
  assert.equal(state.store, null);
  const { feed, token } = runModel.beginLoad();
  const got = await feed.load(token, { refreshDetail: true });
  assert.equal(runModel.loaded(got.detail, got.metrics), true);
  assert.equal(state.store.lastStep, 2);
  assert.equal(state.runs.get(3).step, 2);
  heard.length = 0;
  runModel.upsertRun({ id: 3, status: "paused" });
  assert.equal(state.detail.status, "paused");
  assert.deepEqual(heard, [["head"], ["runs"]]);
  heard.length = 0;
  runModel.noteStep(9);
  assert.equal(state.runs.get(3).step, 9);
  runModel.noteStep(4); // never backwards
  assert.equal(state.runs.get(3).step, 9);
  assert.deepEqual(heard, [["runs"]]);
  heard.length = 0;
  runModel.upsertRun({ id: 3, variable_sets: [{ from_step: 0, variables: [0] }] }); // a recompile
  assert.deepEqual(heard, [["reload", 3]]);
  assert.equal(state.store, null);
  runModel.upsertRun({ id: 4, name: "other" });
  runModel.keepRuns(new Set([4]));
  assert.deepEqual([...state.runs.keys()].sort(), [3, 4]); // the selected run stays
  for (const off of offs) off();
  runModel.upsertRun({ id: 5 });
  assert.equal(heard.at(-1)[0], "runs"); // unsubscribed: nothing more heard
  assert.equal(heard.filter(([t]) => t === "runs").length, 2);
});
