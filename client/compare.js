// The comparison view: 2-8 ticked runs overlaid (chart-compare.js).
//
// Opening it (and every websocket reconnect while it is open):
//   1. send {"type":"compare","run_ids":[...]} so the server pushes each run's
//      live `steps` too, and hold those records per run (follow.js, as the run view),
//   2. fetch each run's detail (once) and its metrics since the last step held,
//   3. merge REST data, then the held records, into that run's RunStore.
// After that live records go straight into the stores and the charts append
// only the new points once per animation frame: histories are never fetched again.

import { draw, extend } from "./chart-compare.js";
import { PALETTE, Plotly } from "./chart-base.js";
import { RunFeed } from "./follow.js";
import { gw, state } from "./state.js";
import { $, el, frameBatched, isAuthError } from "./util.js";

const cmp = {
  open: false,
  runs: [], // [{id, name, feed: RunFeed, store}], in the order ticked
  vars: [], // chosen variables (per-variable norm chart)
  rendered: new Map(), // run id -> absolute store index drawn
  needsFull: true,
};

let live = null;
let divs = null;

export function initCompare(theLive) {
  live = theLive;
  divs = { loss: $("cmp-loss"), lr: $("cmp-lr"), gnorm: $("cmp-gnorm"), vars: $("cmp-vars") };
  $("btn-compare").addEventListener("click", () => openCompare([...state.picked]));
  $("compare-close").addEventListener("click", closeCompare);
  $("compare-vars").addEventListener("change", () => {
    cmp.vars = [...$("compare-vars").selectedOptions].map((o) => o.value);
    cmp.needsFull = true;
    render();
  });
  // Choosing a run (in the list, or another #run= in the URL) leaves the comparison for that run's view.
  $("run-list").addEventListener("click", (e) => {
    if (cmp.open && e.target.closest("a.run-link")) closeCompare();
  });
  window.addEventListener("hashchange", closeCompare);
  gw.compare = { open: false, runIds: [], lastSteps: {} }; // test hook
}

export function openCompare(ids) {
  if (ids.length < 2) return;
  for (const run of cmp.runs) run.feed.close(); // a comparison already open: its loads are dropped
  cmp.open = true;
  cmp.runs = ids.map((id) => compared(id, (state.runs.get(id) || {}).name || `run ${id}`));
  cmp.vars = [];
  cmp.rendered = new Map();
  cmp.needsFull = true;
  $("placeholder").hidden = true;
  $("run-view").hidden = true;
  $("compare-view").hidden = false;
  renderLegend();
  gw.compare.open = true;
  gw.compare.runIds = ids;
  gw.compare.lastSteps = {};
  render();
  resyncCompare();
}

export function closeCompare() {
  if (!cmp.open) return;
  cmp.open = false;
  for (const run of cmp.runs) run.feed.close();
  cmp.runs = [];
  live.send({ type: "compare", run_ids: [] });
  for (const d of Object.values(divs)) {
    if (d._gwPlotted) Plotly.purge(d);
    d._gwPlotted = false;
  }
  $("compare-view").hidden = true;
  $("run-view").hidden = state.selected === null;
  $("placeholder").hidden = state.selected !== null;
  gw.compare.open = false;
  gw.compare.runIds = [];
}

/** (Re)subscribe and backfill every compared run from REST since its last step (a new socket, or opening). */
export function resyncCompare() {
  if (!cmp.open) return;
  live.send({ type: "compare", run_ids: cmp.runs.map((r) => r.id) }); // FIRST, so nothing falls in between
  for (const run of cmp.runs) load(run);
}

/** One compared run: its feed, and its store once loaded (chart-compare.js reads `store`). */
function compared(id, name) {
  const feed = new RunFeed(id);
  return { id, name, feed, get store() { return feed.store; } };
}

async function load(run) {
  const token = run.feed.begin();
  try {
    const got = await run.feed.load(token);
    if (!got) return;
    const { detail, metrics } = got;
    if (run.feed.merge(detail, metrics)) {
      run.name = detail.name;
      cmp.needsFull = true;
      renderVarChoices();
      renderLegend();
    }
    render();
  } catch (e) {
    if (!run.feed.current(token)) return;
    run.feed.failed();
    const why = isAuthError(e) ? "not signed in" : e.message;
    showNotice(`Could not load run ${run.id}: ${why}. Retrying on reconnect.`);
  }
}

/** A live `steps` message: records of a compared run go to its store (or are held while it loads). */
export function onCompareSteps(msg) {
  if (!cmp.open) return;
  const run = cmp.runs.find((r) => r.id === msg.run_id);
  if (!run || !Array.isArray(msg.records)) return;
  if (run.feed.offer(msg.records)) render(); // held while it loads
}

const render = frameBatched(() => {
  if (!cmp.open) return;
  if (cmp.needsFull) {
    cmp.rendered = draw(divs, cmp.runs, cmp.vars);
    cmp.needsFull = false;
  } else {
    extend(divs, cmp.runs, cmp.vars, cmp.rendered);
  }
  gw.compare.lastSteps = Object.fromEntries(cmp.runs.filter((r) => r.store).map((r) => [r.id, r.store.lastStep]));
});

// The union of the runs' variables, in model order of the first run that has each; the first one chosen at the start.
function renderVarChoices() {
  const names = [];
  for (const r of cmp.runs) for (const v of r.store ? r.store.variables : []) if (!names.includes(v)) names.push(v);
  if (!cmp.vars.length && names.length) cmp.vars = [names[0]];
  const select = $("compare-vars");
  select.replaceChildren(...names.map((v) => el("option", { value: v, selected: cmp.vars.includes(v) }, v)));
}

function renderLegend() {
  $("compare-runs").replaceChildren(...cmp.runs.map((r, i) => el("li", { dataset: { testid: "compare-run", runId: String(r.id) } },
    el("span", { class: "compare-swatch", style: `background:${PALETTE[i % PALETTE.length]}` }), `${r.name} #${r.id}`)));
}

function showNotice(text) {
  const n = $("compare-notice");
  n.textContent = text;
  n.className = "notice notice-error";
  n.hidden = false;
}
