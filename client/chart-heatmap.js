// The gradient-flow heatmap: log10 of each variable's gradient norm per step
// (rows in model order), NaN/Inf cells marked with a cross, and rows flagged by
// open alerts outlined from the step each alert started. Redraws are
// adaptively throttled: a heatmap can be big, and Plotly redraws it whole.

import { mergeHighlights } from "./alerts.js";
import { frameBatched, plotlyText } from "./util.js";
import { MUTED, axis, baseLayout, plot } from "./chart-base.js";
import { HeatWindow } from "./heat-window.js";

const SEVERITY_COLOR = { critical: "#d62839", warning: "#d98a00" };

function tickLabel(v) {
  if (v >= 1e-3 && v < 1e5) return String(Number(v.toPrecision(3)));
  const k = Math.floor(Math.log10(v) + 1e-9);
  const m = Math.round(v / 10 ** k);
  return m === 1 ? `1e${k}` : `${m}e${k}`;
}

function colorbar(zmin, zmax) {
  // Ticks in the data's log10 space, labelled with the real norm:
  // decades when the range is wide, 1-2-5 steps when it is narrow.
  const lo = Math.floor(zmin);
  const hi = Math.ceil(zmax);
  const vals = [];
  if (hi - lo <= 2) {
    for (let k = lo; k <= hi; k++) {
      for (const m of [1, 2, 5]) {
        const z = k + Math.log10(m);
        if (z >= zmin - 1e-9 && z <= zmax + 1e-9) vals.push(z);
      }
    }
  } else {
    const stepK = Math.max(1, Math.ceil((hi - lo) / 8));
    for (let k = lo; k <= hi; k += stepK) if (k >= zmin - 1e-9 && k <= zmax + 1e-9) vals.push(k);
  }
  return {
    title: { text: "‖grad‖", side: "right", font: { size: 11, color: MUTED } },
    tickmode: "array",
    tickvals: vals,
    ticktext: vals.map((z) => tickLabel(10 ** z)),
    tickfont: { size: 10, color: MUTED },
    thickness: 12,
    outlinewidth: 0,
    len: 1,
  };
}

export class Heatmap {
  constructor(div) {
    this.div = div;
    this.store = null;
    this.heat = null; // HeatWindow of `store`: the columns on screen
    this.highlights = []; // merged [{variable, step, severity, kind, kinds}]
    this.lastDraw = 0;
    this.cost = 0; // smoothed ms per draw
    this.revision = 0;
    this.hlSig = undefined;
    this.redrawSoon = frameBatched(() => {
      if (this.heat) this.draw();
    });
  }

  reset() {
    this.store = null;
    this.heat = null;
  }

  /** Rebuild from the store and draw now (height follows the number of variables). */
  full(store) {
    this.store = store;
    this.div.style.height = `${Math.max(260, Math.min(560, 70 + 22 * store.V))}px`;
    this.div.dataset.groups = JSON.stringify(store.groups.map((g) => [g.name, g.start, g.end]));
    this.heat = new HeatWindow(store);
    this.draw();
  }

  /**
   * Rows to highlight: [{variable, step, severity, kind}] (merged per variable:
   * earliest step, worst severity). Redraws on the next frame when the set changed.
   */
  setHighlights(list) {
    const merged = mergeHighlights(list);
    const sig = JSON.stringify(merged.map((h) => [h.variable, h.step, h.severity, h.kinds]));
    this.div.dataset.highlighted = JSON.stringify(merged.map((h) => h.variable));
    if (sig === this.hlSig) return;
    this.hlSig = sig;
    this.highlights = merged;
    if (this.heat) this.redrawSoon();
  }

  /** Draw the records that arrived since the last draw, unless throttled (then returns false: ask again later). */
  update() {
    if (!this.heat || !this.heat.behind) return true;
    const now = performance.now();
    // Adaptive throttle: at most 5 heatmap draws a second, and a big heatmap that takes t ms waits 4t.
    if (now - this.lastDraw < Math.max(200, 4 * this.cost)) return false;
    this.heat.catchUp();
    this.draw();
    return true;
  }

  highlightShapes() {
    const h = this.heat;
    if (!h || !h.x.length || !this.highlights.length) return [];
    const index = new Map(this.store.variables.map((v, i) => [v, i]));
    const first = h.x[0];
    const last = h.x[h.x.length - 1];
    const out = [];
    for (const hl of this.highlights) {
      const row = index.get(hl.variable);
      if (row === undefined) continue;
      const color = SEVERITY_COLOR[hl.severity] || SEVERITY_COLOR.warning;
      const x0 = Math.min(Math.max(hl.step, first), last) - 0.5;
      out.push({
        type: "rect", xref: "x", yref: "y", x0, x1: last + 0.5, y0: row - 0.5, y1: row + 0.5,
        line: { color, width: 2 }, fillcolor: "rgba(0,0,0,0)", layer: "above",
      });
      // a solid tick where the alert started, so the eye finds the onset
      out.push({
        type: "line", xref: "x", yref: "y", x0, x1: x0, y0: row - 0.5, y1: row + 0.5,
        line: { color, width: 4 }, layer: "above",
      });
    }
    return out;
  }

  /** One optimizer group per band of rows (a GAN's discriminator, generator): a rule between, the name on the right. */
  groupMarks() {
    const shapes = [];
    const annotations = [];
    for (const g of this.store.groups) {
      if (g.start > 0) {
        shapes.push({
          type: "line", xref: "paper", yref: "y", x0: 0, x1: 1, y0: g.start - 0.5, y1: g.start - 0.5,
          line: { color: "#ffffff", width: 3 }, layer: "above",
        });
      }
      annotations.push({
        xref: "paper", yref: "y", x: 1, y: (g.start + g.end - 1) / 2, xanchor: "right", showarrow: false,
        text: `<b>${plotlyText(g.name)}</b>`, font: { size: 11, color: "#ffffff" }, bgcolor: "rgba(0,0,0,0.35)",
      });
    }
    return { shapes, annotations };
  }

  // Variable names can be long and many: show a readable subset of
  // shortened labels (hover shows the full name) and size the margin to them.
  ticks(labels) {
    const s = this.store;
    const rows = Math.max(1, labels.length);
    const plotH = Math.max(100, (this.div.clientHeight || 340) - 60);
    const every = Math.max(1, Math.ceil(rows / Math.floor(plotH / 13)));
    const hl = new Map(this.highlights.map((h) => [h.variable, h]));
    const tickvals = [];
    const ticktext = [];
    let longest = 0;
    for (let v = 0; v < labels.length; v++) {
      const name = s.variables[v];
      const mark = hl.get(name);
      if (v % every !== 0 && !mark) continue; // highlighted rows are always labelled
      const short = name.length > 40 ? `…${name.slice(-39)}` : name;
      longest = Math.max(longest, short.length + (mark ? 2 : 0));
      tickvals.push(labels[v]);
      ticktext.push(mark
        ? `<span style="color:${SEVERITY_COLOR[mark.severity] || SEVERITY_COLOR.warning}"><b>▲ ${plotlyText(short)}</b></span>`
        : plotlyText(short));
    }
    return { axis: { tickmode: "array", tickvals, ticktext }, margin: Math.min(320, 16 + Math.round(longest * 6.6)) };
  }

  draw() {
    const s = this.store;
    const h = this.heat;
    const t0 = performance.now();
    const labels = s.variables.map(plotlyText);
    let zmin = h.zmin;
    let zmax = h.zmax;
    if (!Number.isFinite(zmin) || !Number.isFinite(zmax)) {
      zmin = -3;
      zmax = 1;
    }
    if (zmax - zmin < 1) {
      const mid = (zmax + zmin) / 2;
      zmin = mid - 0.5;
      zmax = mid + 0.5;
    }
    this.revision += 1;
    const ticks = this.ticks(labels);
    const groups = this.groupMarks();
    const data = [
      {
        type: "heatmap", name: "‖grad‖", x: h.x, y: labels, z: h.z, zmin, zmax, colorscale: "Viridis",
        colorbar: colorbar(zmin, zmax), hoverongaps: false, xgap: 0, ygap: s.V <= 40 ? 1 : 0,
        hovertemplate: "step %{x}<br>%{y}<br>log10 ‖g‖ = %{z:.2f}<extra></extra>",
      },
      {
        type: "scatter", mode: "markers", name: "NaN/Inf", x: h.nanX, y: h.nanY, showlegend: h.nanX.length > 0,
        marker: { symbol: "x-thin", size: 6, line: { width: 1.5, color: "#ff2d55" }, color: "#ff2d55", opacity: 0.9 },
        hovertemplate: "step %{x}<br>%{y}<br>NaN/Inf gradient<extra></extra>",
      },
    ];
    const layout = baseLayout({
      uirevision: s.runId,
      datarevision: this.revision,
      hovermode: "closest",
      margin: { l: ticks.margin, r: 8, t: 8, b: 36 },
      legend: { orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom", font: { size: 10, color: MUTED } },
      xaxis: axis("step", { showgrid: false }),
      yaxis: axis(null, {
        type: "category", autorange: "reversed", showgrid: false, tickfont: { size: 10, color: MUTED },
        categoryorder: "array", categoryarray: labels, automargin: false, ...ticks.axis,
      }),
      shapes: [...this.highlightShapes(), ...groups.shapes],
      annotations: groups.annotations,
    });
    plot(this.div, data, layout);
    const t1 = performance.now();
    this.cost = 0.8 * this.cost + 0.2 * (t1 - t0);
    this.lastDraw = t1;
  }
}
