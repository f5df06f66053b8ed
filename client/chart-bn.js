// BatchNorm moving statistics per layer: mean (top, solid) and variance
// (bottom, log, dotted), one colour per layer shared by both.

import { plotlyText } from "./util.js";
import {
  MAX_POINTS, PALETTE, Plotly, axis, baseLayout, centerNote, col, fin, plot, pos, readableAxis, rescale, sameX,
} from "./chart-base.js";

function series(s, from, to) {
  return {
    x: s.c.step.slice(from, to),
    mean: s.bnMean.map((a) => col(a, from, to, fin)),
    var: s.bnVar.map((a) => col(a, from, to, pos)),
  };
}

export function draw(div, s, from) {
  const d = series(s, from, s.length);
  const trace = (name, l, y, extra) => ({
    name: plotlyText(name), legendgroup: `bn${l}`, x: d.x, y, type: "scatter", mode: "lines",
    hovertemplate: "%{y:.4g}", connectgaps: true, // BN is reported on some steps only
    ...extra,
  });
  const color = (l) => PALETTE[l % PALETTE.length];
  const data = [
    ...s.bnLayers.map((name, l) => trace(name, l, d.mean[l], { line: { color: color(l), width: 1.3 } })),
    ...s.bnLayers.map((name, l) => trace(name, l, d.var[l],
      { showlegend: false, yaxis: "y2", line: { color: color(l), width: 1.3, dash: "dot" } })),
  ];
  const layout = baseLayout({
    uirevision: s.runId,
    // no layers: no axes either, so the note is not drawn over empty ticks
    xaxis: axis("step", { anchor: "y2", visible: s.L > 0 }),
    yaxis: readableAxis(div, "yaxis", "moving mean", d.mean.flat(), { domain: [0.54, 1], visible: s.L > 0 }),
    yaxis2: axis("moving var", { domain: [0, 0.44], type: "log", nticks: 4, visible: s.L > 0 }),
    showlegend: s.L > 0 && s.L <= 12,
    annotations: s.L ? [] : [centerNote("This model has no BatchNorm layers")],
  });
  plot(div, data, layout);
}

export function extend(div, s, from, to) {
  const L = s.L;
  if (L === 0) return;
  const d = series(s, from, to);
  Plotly.extendTraces(div, { x: sameX(d.x, 2 * L), y: [...d.mean, ...d.var] }, Array.from({ length: 2 * L }, (_, i) => i), MAX_POINTS);
  rescale(div, "yaxis", "moving mean", div.data.slice(0, L).flatMap((t) => t.y));
}
