// The live charts of the selected run. The RunStore is the source of truth;
// this module renders it incrementally: new points are appended with
// Plotly.extendTraces (line charts, bounded by MAX_POINTS) and the heatmap
// arrays are grown in place and redrawn at most once per animation frame.
// Each chart is its own module (chart-*.js); this one decides when and what
// to draw.

import { fmtNum, frameBatched } from "./util.js";
import { MAX_POINTS, Plotly } from "./chart-base.js";
import * as bn from "./chart-bn.js";
import * as globalNorm from "./chart-global.js";
import { Heatmap } from "./chart-heatmap.js";
import * as losslr from "./chart-losslr.js";
import * as nonfinite from "./chart-nonfinite.js";
import * as probe from "./chart-probe.js";
import * as ratio from "./chart-ratio.js";

const MIN_FLUSH_MS = 150;

// The line charts by div key: each module has draw(div, store, from) and
// extend(div, store, from, to), and may have outdated(div, store).
const LINES = { global: globalNorm, losslr, nonfinite, bn, ratio };

export class Charts {
  constructor(divs, hooks = {}) {
    this.divs = divs; // {heatmap, global, nonfinite, bn, losslr, ratio, probe}
    this.heatmap = new Heatmap(divs.heatmap);
    this.probeRendered = -1;
    this.hooks = hooks; // {onStats(store), onProbe(shown): whether the probe card is shown}
    this.store = null;
    this.raf = 0;
    this.timer = 0;
    this.lastFlush = 0;
    this.rendered = 0; // absolute store index rendered into the line charts
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
    const resizeSoon = frameBatched(() => {
      for (const d of pending) if (d._gwPlotted && d.offsetParent !== null) Plotly.Plots.resize(d);
      pending.clear();
    });
    const ro = typeof ResizeObserver === "function"
      ? new ResizeObserver((entries) => {
        for (const e of entries) if (e.target._gwPlotted) pending.add(e.target);
        if (pending.size) resizeSoon();
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
    this.heatmap.reset();
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

  /** Heatmap rows flagged by alerts: [{variable, step, severity, kind}]. */
  setHighlights(list) {
    this.heatmap.setHighlights(list);
  }

  /** New gaps in the stream or a rewind: redraw their bands and lines. */
  refreshGaps() {
    if (this.store) globalNorm.refreshGaps(this.divs.global, this.store);
  }

  flush() {
    const s = this.store;
    if (!s) return;
    if (this.needsFull || this.rendered < s.base || s.end - this.rendered > MAX_POINTS / 2) {
      this.fullRender();
      return;
    }
    for (const [key, chart] of Object.entries(LINES)) {
      if (chart.outdated && chart.outdated(this.divs[key], s)) this.stale[key] = true;
    }
    this.refreshStale();
    if (s.end > this.rendered) {
      this.extendLines(this.rendered - s.base, s.length);
      this.rendered = s.end;
    }
    if (this.visible.heatmap && !this.heatmap.update()) this.schedule();
    this.maybeDrawProbe();
    if (this.hooks.onStats) this.hooks.onStats(s);
  }

  fullRender() {
    const s = this.store;
    this.needsFull = false;
    this.stale = {};
    const from = Math.max(0, s.length - MAX_POINTS);
    for (const [key, chart] of Object.entries(LINES)) chart.draw(this.divs[key], s, from);
    this.probeRendered = -1;
    this.maybeDrawProbe();
    this.heatmap.full(s);
    this.rendered = s.end;
    if (this.hooks.onStats) this.hooks.onStats(s);
  }

  // Line charts scrolled out of view are not touched; they are marked stale
  // and redrawn from the store once they scroll back into view.
  extendLines(from, to) {
    if (to <= from) return;
    for (const [key, chart] of Object.entries(LINES)) {
      if (!this.visible[key]) this.stale[key] = true;
      else if (!this.stale[key]) chart.extend(this.divs[key], this.store, from, to);
    }
  }

  /** Redraw, from the store, line charts that came back into view. */
  refreshStale() {
    const from = Math.max(0, this.store.length - MAX_POINTS);
    for (const [key, chart] of Object.entries(LINES)) {
      if (this.stale[key] && this.visible[key]) {
        this.stale[key] = false;
        chart.draw(this.divs[key], this.store, from);
      }
    }
  }

  maybeDrawProbe() {
    const s = this.store;
    if (!s || !this.divs.probe || s.probeVersion === this.probeRendered) return;
    // A run with layers to probe shows its card at once: empty, it says what it waits for (chart-probe.js).
    const shown = s.hasProbe || s.reluLayers.length > 0 || s.L > 0;
    if (this.hooks.onProbe) this.hooks.onProbe(shown);
    if (!shown || !this.visible.probe) return;
    this.probeRendered = s.probeVersion;
    probe.draw(this.divs.probe, s);
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
