// The comparison charts: loss, learning rate, global norm and the chosen
// per-variable norms of 2-8 runs overlaid on one step axis, a colour per run
// (a dash per variable). draw() lays a chart out from the stores; extend()
// appends only the points each run received since (Plotly.extendTraces).

import { MAX_POINTS, PALETTE, Plotly, axis, baseLayout, fin, plot, pos, readableAxis, rescale } from "./chart-base.js";
import { plotlyText } from "./util.js";

const DASHES = ["solid", "dash", "dot", "dashdot"];

/** The charts: div key, y title, value filter, axis (readable / log / from zero), each run's series (store columns). */
const CHARTS = [
  { key: "loss", title: "loss", readable: true, f: fin, series: (run) => [{ col: run.store.c.loss }] },
  { key: "lr", title: "learning rate", f: fin, shape: "hv", zero: true, series: (run) => [{ col: run.store.c.lr }] },
  { key: "gnorm", title: "global norm", log: true, f: pos, series: (run) => [{ col: run.store.c.gnorm }] },
  {
    key: "vars", title: "gradient norm", log: true, f: pos,
    series: (run, vars) => vars.map((v, k) => ({ v, k, col: run.store.gn[run.store.variables.indexOf(v)] }))
      .filter((t) => t.col !== undefined),
  },
];

/** Traces of one chart: {run, col, name, line} for every loaded run (and chosen variable). */
function traces(chart, runs, vars) {
  const out = [];
  runs.forEach((run, i) => {
    if (!run.store) return;
    for (const t of chart.series(run, vars)) {
      const name = t.v === undefined ? run.name : `${run.name} · ${t.v}`;
      const line = { color: PALETTE[i % PALETTE.length], width: 1.5, dash: DASHES[(t.k || 0) % DASHES.length] };
      if (chart.shape) line.shape = chart.shape;
      out.push({ run, col: t.col, name: plotlyText(name), line });
    }
  });
  return out;
}

function rows(chart, t, from) {
  const s = t.run.store;
  const start = Math.max(from - s.base, 0, s.length - MAX_POINTS);
  return { x: s.c.step.slice(start), y: t.col.slice(start).map(chart.f) };
}

/** Draw every chart in full; returns each run's rendered end (absolute store index). */
export function draw(divs, runs, vars) {
  for (const chart of CHARTS) {
    const div = divs[chart.key];
    const ts = traces(chart, runs, vars);
    const data = ts.map((t) => ({ name: t.name, ...rows(chart, t, 0), type: "scatter", mode: "lines", connectgaps: true, line: t.line }));
    const y = chart.readable
      ? readableAxis(div, "yaxis", chart.title, data.flatMap((d) => d.y))
      : axis(chart.title, chart.log ? { type: "log", exponentformat: "power" } : { tickformat: "~g", rangemode: chart.zero ? "tozero" : "normal" });
    const layout = baseLayout({ uirevision: runs.map((r) => r.id).join(","), xaxis: axis("step"), yaxis: y });
    if (!data.length) layout.annotations = [{ text: "no data yet", xref: "paper", yref: "paper", x: 0.5, y: 0.5, showarrow: false }];
    plot(div, data, layout);
  }
  return new Map(runs.filter((r) => r.store).map((r) => [r.id, r.store.end]));
}

/** Append the points each run got after `rendered` (id -> absolute index); updates `rendered`. */
export function extend(divs, runs, vars, rendered) {
  for (const chart of CHARTS) {
    const div = divs[chart.key];
    const ts = traces(chart, runs, vars);
    const idx = [];
    const x = [];
    const y = [];
    ts.forEach((t, i) => {
      const from = rendered.get(t.run.id);
      if (from === undefined || from >= t.run.store.end) return;
      const d = rows(chart, t, from);
      idx.push(i);
      x.push(d.x);
      y.push(d.y);
    });
    if (idx.length) Plotly.extendTraces(div, { x, y }, idx, MAX_POINTS);
    if (idx.length && chart.readable) rescale(div, "yaxis", chart.title, div.data.flatMap((d) => d.y));
  }
  for (const r of runs) if (r.store) rendered.set(r.id, r.store.end);
}
