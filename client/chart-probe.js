// The probe batch (every N steps, its own step axis): share of dead ReLU
// units per layer (top, solid) and the BatchNorm train/inference gap (bottom, dotted).

import { plotlyText } from "./util.js";
import { PALETTE, axis, baseLayout, centerNote, fin, plot } from "./chart-base.js";

/** What an empty probe chart is waiting for, or null when it has points. */
export function emptyNote(s) {
  const p = s.probe;
  if (p.dead_relu.size || p.bn_gap.size) return null;
  if (p.step.length || (!s.reluLayers.length && !s.L)) return "This model has no ReLU or BatchNorm layers to probe";
  // two lines: one does not fit a half-width card (Plotly breaks lines only at <br>)
  return "Waiting for the first probe batch:<br>it runs every 100 steps by default (GradientMonitor(probe_every=…))";
}

export function draw(div, s) {
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
    xaxis: axis("step", { anchor: hasBn ? "y2" : "y", visible: hasRelu || hasBn }),
    yaxis: axis("dead ReLU units", { domain: hasBn ? [0.54, 1] : [0, 1], range: [0, 1.02], tickformat: ".0%", nticks: 5, visible: hasRelu }),
    yaxis2: axis("BN gap", { domain: hasRelu ? [0, 0.44] : [0, 1], rangemode: "tozero", nticks: 4, visible: hasBn }),
    showlegend: k <= 10,
    annotations: emptyNote(s) === null ? [] : [centerNote(emptyNote(s))],
  });
  plot(div, data, layout);
}
