// Update-to-weight ratio ‖Δw‖/‖w‖ per step: one line per variable, or the
// min / median / max across variables when there are too many to read, with
// the 1e-3 rule of thumb as a dashed line.

import { plotlyText } from "./util.js";
import { MAX_POINTS, MUTED, PALETTE, Plotly, axis, baseLayout, centerNote, col, plot, pos } from "./chart-base.js";

export const RATIO_RULE = 1e-3; // the usual rule of thumb for ‖Δw‖/‖w‖ per step
const MAX_RATIO_LINES = 24; // more variables than this: min / median / max across variables instead

/** {lo, mid, hi} of the positive finite values (mid: the upper median), or null when there are none. */
export function spread(values) {
  const vals = [];
  for (const x of values) if (pos(x) !== null) vals.push(x);
  if (!vals.length) return null;
  vals.sort((a, b) => a - b);
  return { lo: vals[0], mid: vals[Math.floor(vals.length / 2)], hi: vals[vals.length - 1] };
}

function summarized(s) {
  return s.V > MAX_RATIO_LINES;
}

/** The traces' y values for store rows [from, to): one per variable, or max/median/min. */
function series(s, from, to) {
  const rows = s.ur.map((a) => col(a, from, to, pos));
  if (!summarized(s)) return rows.map((y, v) => ({ name: s.variables[v], y }));
  const lo = [];
  const mid = [];
  const hi = [];
  for (let i = 0; i < to - from; i++) {
    const q = spread(rows.map((r) => r[i]));
    lo.push(q && q.lo);
    mid.push(q && q.mid);
    hi.push(q && q.hi);
  }
  return [{ name: "max over variables", y: hi }, { name: "median", y: mid }, { name: "min", y: lo }];
}

export function draw(div, s, from) {
  const x = s.c.step.slice(from);
  const summary = summarized(s);
  const data = series(s, from, s.length).map((t, i) => ({
    name: plotlyText(t.name), x, y: t.y, type: "scatter", mode: "lines", connectgaps: true,
    line: summary
      ? { color: PALETTE[0], width: i === 1 ? 1.6 : 1, dash: i === 1 ? "solid" : "dot" }
      : { color: PALETTE[i % PALETTE.length], width: 1.2 },
    hovertemplate: "%{y:.3g}",
  }));
  const layout = baseLayout({
    uirevision: s.runId,
    xaxis: axis("step"),
    yaxis: axis("‖Δw‖ / ‖w‖ (log)", { type: "log", dtick: "D2", tickformat: ".0e" }),
    showlegend: summary || s.V <= 8,
    shapes: [{
      type: "line", xref: "paper", yref: "y", x0: 0, x1: 1, y0: RATIO_RULE, y1: RATIO_RULE, layer: "below",
      line: { color: "#9aa4b2", width: 1.2, dash: "dash" },
    }],
    annotations: [
      { text: "1e-3 rule of thumb", xref: "paper", yref: "y", x: 1, y: Math.log10(RATIO_RULE), xanchor: "right",
        yanchor: "bottom", showarrow: false, font: { size: 10, color: MUTED } },
      ...(s.urSeen || !s.length ? [] : [centerNote("No update ratios reported by this run")]),
    ],
  });
  plot(div, data, layout);
  div._gwRatioSeen = s.urSeen;
}

export function extend(div, s, from, to) {
  const r = series(s, from, to);
  const x = s.c.step.slice(from, to);
  Plotly.extendTraces(div, { x: r.map(() => x), y: r.map((t) => t.y) }, r.map((_, i) => i), MAX_POINTS);
}

/** The first ratios arrived since the last draw: redraw without the "none reported" note. */
export function outdated(div, s) {
  return div._gwRatioSeen !== s.urSeen;
}
