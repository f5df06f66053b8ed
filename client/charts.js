// The live charts of the selected run. The RunStore is the source of
// truth; this module renders it incrementally: new points are appended with
// Plotly.extendTraces (line charts, bounded by MAX_POINTS) and the heatmap
// arrays are grown in place and redrawn at most once per animation frame.

import { plotlyText, fmtNum } from "./util.js";

// plotly.min.js is a classic script loaded before this module; looked up lazily.
const Plotly = new Proxy({}, { get: (_, k) => window.Plotly[k] });

export const MAX_POINTS = 5000; // points per line trace kept on screen
const MAX_HEAT_CELLS = 1_500_000;
const MAX_NAN_MARKERS = 4000;
const MAX_RATIO_LINES = 24; // more variables than this: min / median / max across variables instead
const MAX_SKIP_SHAPES = 300;
export const RATIO_RULE = 1e-3; // the usual rule of thumb for ‖Δw‖/‖w‖ per step
const SEVERITY_COLOR = { critical: "#d62839", warning: "#d98a00" };
const MIN_FLUSH_MS = 150;

const PALETTE = ["#4361ee", "#f77f00", "#2a9d8f", "#e63946", "#7b2cbf", "#588157", "#d4a017", "#0096c7", "#c9184a", "#6c757d"];
const INK = "#1f2733";
const MUTED = "#6b7685";
const GRID = "#eceff3";

const CONFIG = {
  responsive: true,
  displaylogo: false,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toImage"],
};

function baseLayout(extra) {
  return {
    margin: { l: 56, r: 16, t: 8, b: 36 },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    font: { family: "Inter, system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 11, color: INK },
    hovermode: "x unified",
    hoverlabel: { bgcolor: "#ffffff", bordercolor: "#d5dae1", font: { color: INK } },
    showlegend: true,
    legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom", font: { size: 10, color: MUTED } },
    ...extra,
  };
}

function axis(extra) {
  return {
    gridcolor: GRID,
    zerolinecolor: GRID,
    linecolor: "#d5dae1",
    tickfont: { color: MUTED },
    title: { font: { size: 11, color: MUTED } },
    automargin: true,
    ...extra,
  };
}

function pos(x) {
  return x !== null && Number.isFinite(x) && x > 0 ? x : null;
}

function fin(x) {
  return x !== null && Number.isFinite(x) ? x : null;
}

function tickLabel(v) {
  if (v >= 1e-3 && v < 1e5) return String(Number(v.toPrecision(3)));
  const k = Math.floor(Math.log10(v) + 1e-9);
  const m = Math.round(v / 10 ** k);
  return m === 1 ? `1e${k}` : `${m}e${k}`;
}

function heatColorbar(zmin, zmax) {
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

export class Charts {
  constructor(divs, hooks = {}) {
    this.divs = divs; // {heatmap, global, nonfinite, bn, losslr, ratio, probe}
    this.highlights = []; // [{variable, step, severity, kind}] drawn on the heatmap
    this.probeRendered = -1;
    this.hooks = hooks; // {onStats(store)}
    this.store = null;
    this.raf = 0;
    this.timer = 0;
    this.lastFlush = 0;
    this.rendered = 0; // absolute store index rendered into the line charts
    this.heatRendered = 0;
    this.heat = null;
    this.lastHeatDraw = 0;
    this.heatCost = 0;
    this.needsFull = true;
    this.visible = {};
    this.stale = {};
    const keyOf = new Map(Object.entries(divs).map(([k, d]) => [d, k]));
    const io = typeof IntersectionObserver === "function"
      ? new IntersectionObserver((entries) => {
        for (const e of entries) this.visible[keyOf.get(e.target)] = e.isIntersecting;
        this.schedule();
      }, { rootMargin: "200px" })
      : null;
    // Plotly's `responsive` follows window resizes only; a card that changes width
    // (e.g. the probe card appearing next to it) needs its chart resized too.
    const pending = new Set();
    let resizeRaf = 0;
    const ro = typeof ResizeObserver === "function"
      ? new ResizeObserver((entries) => {
        for (const e of entries) if (e.target._gwPlotted) pending.add(e.target);
        if (!resizeRaf && pending.size) resizeRaf = requestAnimationFrame(() => {
          resizeRaf = 0;
          for (const d of pending) if (d._gwPlotted && d.offsetParent !== null) window.Plotly.Plots.resize(d);
          pending.clear();
        });
      })
      : null;
    for (const [k, d] of Object.entries(divs)) {
      this.visible[k] = true; // until the observer says otherwise
      if (io) io.observe(d);
      if (ro) ro.observe(d);
    }
  }

  attach(store) {
    this.store = store;
    this.needsFull = true;
    this.schedule();
  }

  reset() {
    this.store = null;
    if (this.raf) cancelAnimationFrame(this.raf);
    clearTimeout(this.timer);
    this.raf = 0;
    this.timer = 0;
    this.heat = null;
    for (const d of Object.values(this.divs)) {
      if (d && d._gwPlotted) {
        Plotly.purge(d);
        d._gwPlotted = false;
      }
    }
  }

  /** Ask for a render on the next animation frame (coalesces any number of calls). */
  // Renders are also spaced by MIN_FLUSH_MS so a fast trainer does not keep
  // the page busy redrawing: at most ~6 updates a second, each batching
  // every record that arrived since the previous one.
  schedule() {
    if (this.raf || this.timer || !this.store) return;
    const wait = MIN_FLUSH_MS - (performance.now() - this.lastFlush);
    if (wait > 0) {
      this.timer = setTimeout(() => {
        this.timer = 0;
        this.schedule();
      }, wait);
      return;
    }
    this.raf = requestAnimationFrame(() => {
      this.raf = 0;
      this.lastFlush = performance.now();
      try {
        this.flush();
      } catch (e) {
        console.error("gradwatch: chart update failed", e);
        this.needsFull = true;
      }
    });
  }

  get heatCols() {
    const V = Math.max(1, this.store ? this.store.V : 1);
    return Math.max(200, Math.min(2000, Math.floor(MAX_HEAT_CELLS / V)));
  }

  flush() {
    const s = this.store;
    if (!s) return;
    if (this.needsFull || this.rendered < s.base || s.end - this.rendered > MAX_POINTS / 2) {
      this.fullRender();
      return;
    }
    if (this._ratioSeen !== s.urSeen) this.stale.ratio = true; // first ratios: redraw without the "none" note
    this.refreshStale();
    if (s.end > this.rendered) {
      const from = this.rendered - s.base;
      const to = s.length;
      this.extendLines(from, to);
      this.rendered = s.end;
    }
    if (this.visible.heatmap) this.maybeDrawHeat();
    this.maybeDrawProbe();
    if (this.hooks.onStats) this.hooks.onStats(s);
  }

  fullRender() {
    const s = this.store;
    this.needsFull = false;
    this.stale = {};
    const from = Math.max(0, s.length - MAX_POINTS);
    this.drawGlobal(from);
    this.drawLossLr(from);
    this.drawNonfinite(from);
    this.drawBn(from);
    this.drawRatio(from);
    this.probeRendered = -1;
    this.maybeDrawProbe();
    const h = Math.max(260, Math.min(560, 70 + 22 * s.V));
    this.divs.heatmap.style.height = `${h}px`;
    this.rebuildHeat();
    this.drawHeat();
    this.rendered = s.end;
    if (this.hooks.onStats) this.hooks.onStats(s);
  }

  _plot(div, data, layout) {
    Plotly.react(div, data, layout, CONFIG);
    div._gwPlotted = true;
  }

  // ------------------------------------------------------------------ line charts

  _lineSeries(from, to) {
    const s = this.store;
    const c = s.c;
    const x = c.step.slice(from, to);
    const map = (arr, f) => arr.slice(from, to).map(f);
    return {
      x,
      gnorm: map(c.gnorm, pos),
      thr: map(c.thr, pos),
      scale: map(c.scale, fin),
      share: map(c.clipShare, fin),
      loss: map(c.loss, fin),
      lr: map(c.lr, fin),
      nfTotal: c.nfTotal.slice(from, to),
      wnf: c.wnf.slice(from, to),
      lnfX: x.filter((_, i) => c.lnf[from + i]),
      bnMean: s.bnMean.map((a) => a.slice(from, to).map(fin)),
      bnVar: s.bnVar.map((a) => a.slice(from, to).map(pos)),
      skipX: x.filter((_, i) => c.skipped[from + i]),
    };
  }

  // Line charts scrolled out of view are not touched; they are marked stale
  // and redrawn from the store once they scroll back into view.
  extendLines(from, to) {
    const d = this._lineSeries(from, to);
    if (!d.x.length) return;
    const xs = (k) => Array.from({ length: k }, () => d.x);
    const L = this.store.L;
    const bnIdx = [];
    for (let i = 0; i < 2 * L; i++) bnIdx.push(i);
    const jobs = {
      global: () => {
        Plotly.extendTraces(this.divs.global, { x: [...xs(4), d.skipX], y: [d.gnorm, d.thr, d.scale, d.share, d.skipX.map(() => 1)] },
          [0, 1, 2, 3, 4], MAX_POINTS);
        if (d.skipX.length) {
          Plotly.relayout(this.divs.global, { shapes: this._globalShapes() });
          if (!this.divs.global.data[4].showlegend) Plotly.restyle(this.divs.global, { showlegend: true }, [4]);
        }
      },
      ratio: () => {
        const r = this._ratioSeries(from, to);
        Plotly.extendTraces(this.divs.ratio, { x: r.map(() => d.x), y: r.map((t) => t.y) }, r.map((_, i) => i), MAX_POINTS);
      },
      losslr: () => Plotly.extendTraces(this.divs.losslr, { x: xs(2), y: [d.loss, d.lr] }, [0, 1], MAX_POINTS),
      nonfinite: () => Plotly.extendTraces(this.divs.nonfinite, { x: xs(2), y: [d.nfTotal, d.wnf] }, [0, 1], MAX_POINTS),
      bn: () => L > 0 && Plotly.extendTraces(this.divs.bn, { x: xs(2 * L), y: [...d.bnMean, ...d.bnVar] }, bnIdx, MAX_POINTS),
    };
    for (const [key, job] of Object.entries(jobs)) {
      if (!this.visible[key]) this.stale[key] = true;
      else if (!this.stale[key]) job();
    }
  }

  /** Redraw, from the store, line charts that came back into view. */
  refreshStale() {
    const from = Math.max(0, this.store.length - MAX_POINTS);
    const draw = { global: () => this.drawGlobal(from), losslr: () => this.drawLossLr(from),
      nonfinite: () => this.drawNonfinite(from), bn: () => this.drawBn(from), ratio: () => this.drawRatio(from) };
    for (const key of Object.keys(draw)) {
      if (this.stale[key] && this.visible[key]) {
        this.stale[key] = false;
        draw[key]();
      }
    }
  }

  drawGlobal(from) {
    const d = this._lineSeries(from, this.store.length);
    const data = [
      { name: "global norm", x: d.x, y: d.gnorm, type: "scatter", mode: "lines", line: { color: PALETTE[0], width: 1.5 } },
      {
        name: "clip threshold", x: d.x, y: d.thr, type: "scatter", mode: "lines",
        line: { color: "#e63946", width: 1.5, dash: "dash", shape: "hv" },
      },
      {
        name: "clip scale", x: d.x, y: d.scale, type: "scatter", mode: "lines", yaxis: "y2",
        line: { color: PALETTE[2], width: 1.2 },
      },
      {
        name: "clipped share (last 50)", x: d.x, y: d.share, type: "scatter", mode: "lines", yaxis: "y2",
        line: { color: PALETTE[1], width: 1.2 }, fill: "tozeroy", fillcolor: "rgba(247,127,0,0.08)",
      },
      {
        name: "skipped step (non-finite)", x: d.skipX, y: d.skipX.map(() => 1), type: "scatter", mode: "markers", yaxis: "y2",
        marker: { symbol: "x-thin", size: 8, line: { width: 2, color: "#d62839" }, color: "#d62839" },
        hovertemplate: "step %{x}: update skipped (non-finite gradients)<extra></extra>",
        showlegend: this.store.skippedCount > 0,
      },
    ];
    const layout = baseLayout({
      uirevision: this.store.runId,
      xaxis: axis({ title: { text: "step", font: { size: 11, color: MUTED } }, anchor: "y2" }),
      yaxis: axis({ type: "log", domain: [0.4, 1], nticks: 6, title: { text: "‖g‖ (log)", font: { size: 11, color: MUTED } } }),
      yaxis2: axis({ domain: [0, 0.3], range: [0, 1.05], title: { text: "scale", font: { size: 11, color: MUTED } } }),
      shapes: this._globalShapes(),
    });
    this._plot(this.divs.global, data, layout);
  }

  _gapShapes() {
    return this.store.gaps.map((g) => ({
      type: "rect", xref: "x", yref: "paper", x0: g.from_step, x1: g.to_step, y0: 0, y1: 1,
      fillcolor: "rgba(107,118,133,0.12)", line: { width: 0 }, layer: "below",
    }));
  }

  // Gaps (grey bands) and skipped steps (thin red lines, the most recent MAX_SKIP_SHAPES).
  _globalShapes() {
    const s = this.store;
    const out = this._gapShapes();
    const c = s.c;
    const skips = [];
    for (let i = c.step.length - 1; i >= 0 && skips.length < MAX_SKIP_SHAPES; i--) if (c.skipped[i]) skips.push(c.step[i]);
    for (const x of skips) {
      out.push({ type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1, layer: "below",
        line: { color: "rgba(214,40,57,0.35)", width: 1 } });
    }
    return out;
  }

  refreshGaps() {
    if (this.store && this.divs.global._gwPlotted) Plotly.relayout(this.divs.global, { shapes: this._globalShapes() });
  }

  // ------------------------------------------------------------------ update-to-weight ratio

  get ratioSummary() {
    return this.store.V > MAX_RATIO_LINES;
  }

  /** The ratio traces' y values for store rows [from, to): one per variable, or min/median/max. */
  _ratioSeries(from, to) {
    const s = this.store;
    const rows = s.ur.map((a) => a.slice(from, to).map(pos));
    if (!this.ratioSummary) return rows.map((y, v) => ({ name: s.variables[v], y }));
    const n = to - from;
    const lo = [];
    const mid = [];
    const hi = [];
    for (let i = 0; i < n; i++) {
      const vals = [];
      for (const r of rows) if (r[i] !== null) vals.push(r[i]);
      if (!vals.length) {
        lo.push(null);
        mid.push(null);
        hi.push(null);
        continue;
      }
      vals.sort((a, b) => a - b);
      lo.push(vals[0]);
      mid.push(vals[Math.floor(vals.length / 2)]);
      hi.push(vals[vals.length - 1]);
    }
    return [{ name: "max over variables", y: hi }, { name: "median", y: mid }, { name: "min", y: lo }];
  }

  drawRatio(from) {
    const s = this.store;
    const x = s.c.step.slice(from);
    const series = this._ratioSeries(from, s.length);
    const summary = this.ratioSummary;
    const data = series.map((t, i) => ({
      name: plotlyText(t.name), x, y: t.y, type: "scatter", mode: "lines", connectgaps: true,
      line: summary
        ? { color: PALETTE[0], width: i === 1 ? 1.6 : 1, dash: i === 1 ? "solid" : "dot" }
        : { color: PALETTE[i % PALETTE.length], width: 1.2 },
      hovertemplate: "%{y:.3g}",
    }));
    const layout = baseLayout({
      uirevision: s.runId,
      xaxis: axis({ title: { text: "step", font: { size: 11, color: MUTED } } }),
      yaxis: axis({ type: "log", dtick: "D2", tickformat: ".0e", title: { text: "‖Δw‖ / ‖w‖ (log)", font: { size: 11, color: MUTED } } }),
      showlegend: summary || s.V <= 8,
      shapes: [{
        type: "line", xref: "paper", yref: "y", x0: 0, x1: 1, y0: RATIO_RULE, y1: RATIO_RULE, layer: "below",
        line: { color: "#9aa4b2", width: 1.2, dash: "dash" },
      }],
      annotations: [
        { text: "1e-3 rule of thumb", xref: "paper", yref: "y", x: 1, y: Math.log10(RATIO_RULE), xanchor: "right",
          yanchor: "bottom", showarrow: false, font: { size: 10, color: MUTED } },
        ...(s.urSeen || !s.length ? [] : [{
          text: "No update ratios reported by this run", xref: "paper", yref: "paper", x: 0.5, y: 0.5,
          showarrow: false, font: { color: MUTED, size: 12 },
        }]),
      ],
    });
    this._plot(this.divs.ratio, data, layout);
    this._ratioSeen = s.urSeen;
  }

  // ------------------------------------------------------------------ probe (dead ReLU / BN gap)

  maybeDrawProbe() {
    const s = this.store;
    if (!s || !this.divs.probe || s.probeVersion === this.probeRendered) return;
    if (this.hooks.onProbe) this.hooks.onProbe(s.hasProbe);
    if (!s.hasProbe) return;
    if (!this.visible.probe) return;
    this.probeRendered = s.probeVersion;
    this.drawProbe();
  }

  drawProbe() {
    const s = this.store;
    const p = s.probe;
    const data = [];
    let k = 0;
    for (const [layer, y] of p.dead_relu) {
      data.push({
        name: `${plotlyText(layer)} · dead`, x: p.step, y: y.map(fin), type: "scatter", mode: "lines+markers",
        connectgaps: true, line: { color: PALETTE[k % PALETTE.length], width: 1.4 }, marker: { size: 4 },
        hovertemplate: "%{y:.1%} dead<extra>" + plotlyText(layer) + "</extra>",
      });
      k += 1;
    }
    for (const [layer, y] of p.bn_gap) {
      data.push({
        name: `${plotlyText(layer)} · BN gap`, x: p.step, y: y.map(fin), type: "scatter", mode: "lines+markers",
        yaxis: "y2", connectgaps: true, line: { color: PALETTE[k % PALETTE.length], width: 1.4, dash: "dot" },
        marker: { size: 4, symbol: "diamond" }, hovertemplate: "%{y:.3g}<extra>" + plotlyText(layer) + "</extra>",
      });
      k += 1;
    }
    const hasRelu = p.dead_relu.size > 0;
    const hasBn = p.bn_gap.size > 0;
    const layout = baseLayout({
      uirevision: s.runId,
      xaxis: axis({ title: { text: "step", font: { size: 11, color: MUTED } }, anchor: hasBn ? "y2" : "y" }),
      yaxis: axis({ domain: hasBn ? [0.54, 1] : [0, 1], range: [0, 1.02], tickformat: ".0%", nticks: 5, visible: hasRelu,
        title: { text: "dead ReLU units", font: { size: 11, color: MUTED } } }),
      yaxis2: axis({ domain: hasRelu ? [0, 0.44] : [0, 1], rangemode: "tozero", nticks: 4, visible: hasBn,
        title: { text: "BN gap", font: { size: 11, color: MUTED } } }),
      showlegend: k <= 10,
    });
    this._plot(this.divs.probe, data, layout);
  }

  drawLossLr(from) {
    const d = this._lineSeries(from, this.store.length);
    const data = [
      { name: "loss", x: d.x, y: d.loss, type: "scatter", mode: "lines", connectgaps: true, line: { color: PALETTE[4], width: 1.5 } },
      {
        name: "learning rate", x: d.x, y: d.lr, type: "scatter", mode: "lines", yaxis: "y2", connectgaps: true,
        line: { color: PALETTE[5], width: 1.5, shape: "hv" },
      },
    ];
    const layout = baseLayout({
      uirevision: this.store.runId,
      xaxis: axis({ title: { text: "step", font: { size: 11, color: MUTED } }, anchor: "y2" }),
      yaxis: axis({ domain: [0.42, 1], title: { text: "loss", font: { size: 11, color: MUTED } } }),
      yaxis2: axis({ domain: [0, 0.32], rangemode: "tozero", nticks: 4, tickformat: "~g", title: { text: "lr", font: { size: 11, color: MUTED } } }),
    });
    this._plot(this.divs.losslr, data, layout);
  }

  drawNonfinite(from) {
    const d = this._lineSeries(from, this.store.length);
    const data = [
      {
        name: "NaN/Inf gradient elements", x: d.x, y: d.nfTotal, type: "scatter", mode: "lines",
        line: { color: "#e63946", width: 1.5 },
      },
      {
        name: "non-finite weights", x: d.x, y: d.wnf, type: "scatter", mode: "lines",
        line: { color: "#7b2cbf", width: 1.2, dash: "dot" },
      },
    ];
    const layout = baseLayout({
      uirevision: this.store.runId,
      xaxis: axis({ title: { text: "step", font: { size: 11, color: MUTED } } }),
      yaxis: axis({ rangemode: "tozero", title: { text: "count per step", font: { size: 11, color: MUTED } } }),
    });
    this._plot(this.divs.nonfinite, data, layout);
  }

  drawBn(from) {
    const s = this.store;
    const d = this._lineSeries(from, s.length);
    const data = [];
    s.bnLayers.forEach((name, l) => {
      const color = PALETTE[l % PALETTE.length];
      data.push({
        name: plotlyText(name), legendgroup: `bn${l}`, x: d.x, y: d.bnMean[l], type: "scatter", mode: "lines",
        line: { color, width: 1.3 }, hovertemplate: "%{y:.4g}", connectgaps: true, // BN is reported on some steps only
      });
    });
    s.bnLayers.forEach((name, l) => {
      const color = PALETTE[l % PALETTE.length];
      data.push({
        name: plotlyText(name), legendgroup: `bn${l}`, showlegend: false, x: d.x, y: d.bnVar[l], type: "scatter",
        mode: "lines", yaxis: "y2", line: { color, width: 1.3, dash: "dot" }, hovertemplate: "%{y:.4g}", connectgaps: true, // BN is reported on some steps only
      });
    });
    const layout = baseLayout({
      uirevision: s.runId,
      xaxis: axis({ title: { text: "step", font: { size: 11, color: MUTED } }, anchor: "y2" }),
      yaxis: axis({ domain: [0.54, 1], title: { text: "moving mean", font: { size: 11, color: MUTED } } }),
      yaxis2: axis({ domain: [0, 0.44], type: "log", nticks: 4, title: { text: "moving var", font: { size: 11, color: MUTED } } }),
      showlegend: s.L > 0 && s.L <= 12,
      annotations: s.L ? [] : [{
        text: "This model has no BatchNorm layers", xref: "paper", yref: "paper", x: 0.5, y: 0.5,
        showarrow: false, font: { color: MUTED, size: 12 },
      }],
    });
    this._plot(this.divs.bn, data, layout);
  }

  // ------------------------------------------------------------------ heatmap

  /**
   * Rows to highlight on the heatmap: [{variable, step, severity, kind}] (several
   * entries per variable are merged: earliest step, worst severity). Redraws the
   * heatmap on the next frame when the set changed.
   */
  setHighlights(list) {
    const byVar = new Map();
    for (const h of list) {
      const old = byVar.get(h.variable);
      if (!old) byVar.set(h.variable, { ...h, kinds: [h.kind] });
      else {
        old.step = Math.min(old.step, h.step);
        if (h.severity === "critical") old.severity = "critical";
        if (!old.kinds.includes(h.kind)) old.kinds.push(h.kind);
      }
    }
    const merged = [...byVar.values()];
    const sig = JSON.stringify(merged.map((h) => [h.variable, h.step, h.severity, h.kinds]));
    const div = this.divs.heatmap;
    div.dataset.highlighted = JSON.stringify(merged.map((h) => h.variable));
    if (sig === this._hlSig) return;
    this._hlSig = sig;
    this.highlights = merged;
    if (this.heat && this.store && !this._hlRaf) {
      this._hlRaf = requestAnimationFrame(() => {
        this._hlRaf = 0;
        if (this.heat && this.store) this.drawHeat();
      });
    }
  }

  _highlightShapes() {
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

  rebuildHeat() {
    const s = this.store;
    const from = Math.max(0, s.length - this.heatCols);
    this.heat = {
      x: s.c.step.slice(from),
      z: s.gn.map((row) => row.slice(from).map((g) => (g !== null && g > 0 && Number.isFinite(g) ? Math.log10(g) : null))),
      nanX: [],
      nanY: [],
      zmin: Infinity,
      zmax: -Infinity,
    };
    this._scanHeat(0, s.length - from, from);
    this.heatRendered = s.end;
  }

  _scanHeat(colFrom, colTo, storeFrom) {
    const h = this.heat;
    const s = this.store;
    for (let v = 0; v < s.V; v++) {
      const row = h.z[v];
      const nf = s.nf[v];
      const gn = s.gn[v];
      for (let j = colFrom; j < colTo; j++) {
        const z = row[j];
        if (z !== null) {
          if (z < h.zmin) h.zmin = z;
          if (z > h.zmax) h.zmax = z;
        }
        const i = storeFrom + j;
        if (nf[i] > 0 || (gn[i] !== null && !Number.isFinite(gn[i]))) {
          h.nanX.push(s.c.step[i]);
          h.nanY.push(plotlyText(s.variables[v]));
        }
      }
    }
    if (h.nanX.length > MAX_NAN_MARKERS) {
      h.nanX.splice(0, h.nanX.length - MAX_NAN_MARKERS);
      h.nanY.splice(0, h.nanY.length - MAX_NAN_MARKERS);
    }
  }

  _appendHeat() {
    const s = this.store;
    const h = this.heat;
    const from = this.heatRendered - s.base;
    const n = s.length - from;
    if (n <= 0) return false;
    const oldLen = h.x.length;
    for (let i = from; i < s.length; i++) h.x.push(s.c.step[i]);
    for (let v = 0; v < s.V; v++) {
      const row = h.z[v];
      const gn = s.gn[v];
      for (let i = from; i < s.length; i++) {
        const g = gn[i];
        row.push(g !== null && g > 0 && Number.isFinite(g) ? Math.log10(g) : null);
      }
    }
    // scan only the new columns
    const storeFromForCol0 = from - oldLen;
    this._scanHeat(oldLen, oldLen + n, storeFromForCol0);
    const extra = h.x.length - this.heatCols;
    if (extra > 0) {
      h.x.splice(0, extra);
      for (const row of h.z) row.splice(0, extra);
      const firstStep = h.x[0];
      let k = 0;
      while (k < h.nanX.length && h.nanX[k] < firstStep) k++;
      if (k) {
        h.nanX.splice(0, k);
        h.nanY.splice(0, k);
      }
    }
    this.heatRendered = s.end;
    return true;
  }

  maybeDrawHeat() {
    if (!this.heat || this.heatRendered >= this.store.end) return;
    const now = performance.now();
    // Adaptive throttle: at most 5 heatmap draws a second, and a big heatmap that takes t ms waits 4t.
    if (now - this.lastHeatDraw < Math.max(200, 4 * this.heatCost)) {
      this.schedule();
      return;
    }
    if (this.heatRendered < this.store.base) this.rebuildHeat();
    else this._appendHeat();
    this.drawHeat();
  }

  // Variable names can be long and many: show a readable subset of
  // shortened labels (hover shows the full name) and size the margin to them.
  _heatTicks(labels) {
    const s = this.store;
    const div = this.divs.heatmap;
    const rows = Math.max(1, labels.length);
    const plotH = Math.max(100, (div.clientHeight || 340) - 60);
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
    this._heatMargin = Math.min(320, 16 + Math.round(longest * 6.6));
    return { tickmode: "array", tickvals, ticktext };
  }

  drawHeat() {
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
    this.heatRevision = (this.heatRevision || 0) + 1;
    const data = [
      {
        type: "heatmap", name: "‖grad‖", x: h.x, y: labels, z: h.z, zmin, zmax, colorscale: "Viridis",
        colorbar: heatColorbar(zmin, zmax), hoverongaps: false, xgap: 0, ygap: s.V <= 40 ? 1 : 0,
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
      datarevision: this.heatRevision,
      hovermode: "closest",
      margin: { l: 8, r: 8, t: 8, b: 36 },
      legend: { orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom", font: { size: 10, color: MUTED } },
      xaxis: axis({ title: { text: "step", font: { size: 11, color: MUTED } }, showgrid: false }),
      yaxis: axis({
        type: "category", autorange: "reversed", showgrid: false, tickfont: { size: 10, color: MUTED },
        categoryorder: "array", categoryarray: labels, automargin: false, ...this._heatTicks(labels),
      }),
      shapes: this._highlightShapes(),
    });
    layout.margin = { l: this._heatMargin, r: 8, t: 8, b: 36 };
    this._plot(this.divs.heatmap, data, layout);
    const t1 = performance.now();
    this.heatCost = 0.8 * this.heatCost + 0.2 * (t1 - t0);
    this.lastHeatDraw = t1;
  }

  /** Short summary numbers for the card headers. */
  static stats(s) {
    const n = s.length;
    const last = n ? n - 1 : -1;
    return {
      clippedShare: s.received ? s.clippedCount / s.received : null,
      lastGnorm: last >= 0 ? s.c.gnorm[last] : null,
      lastThr: last >= 0 ? s.c.thr[last] : null,
      lastLoss: last >= 0 ? s.c.loss[last] : null,
      lastLr: last >= 0 ? s.c.lr[last] : null,
      lastSps: last >= 0 ? s.c.sps[last] : null,
      fmt: fmtNum,
    };
  }
}
