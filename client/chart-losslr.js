// Loss (top) and learning rate (bottom, stepped: it changes by command or schedule).

import { MAX_POINTS, PALETTE, Plotly, axis, baseLayout, col, fin, plot, readableAxis, rescale, sameX } from "./chart-base.js";

function series(s, from, to) {
  return { x: s.c.step.slice(from, to), loss: col(s.c.loss, from, to, fin), lr: col(s.c.lr, from, to, fin) };
}

/** The loss trace's name: says so when the train step exposed only Keras' running mean of the epoch. */
export function lossName(s) {
  return s.lossMeanSteps > 0 ? "loss (Keras' running mean of the epoch)" : "loss";
}

export function draw(div, s, from) {
  const d = series(s, from, s.length);
  const data = [
    { name: lossName(s), x: d.x, y: d.loss, type: "scatter", mode: "lines", connectgaps: true, line: { color: PALETTE[4], width: 1.5 } },
    {
      name: "learning rate", x: d.x, y: d.lr, type: "scatter", mode: "lines", yaxis: "y2", connectgaps: true,
      line: { color: PALETTE[5], width: 1.5, shape: "hv" },
    },
  ];
  const layout = baseLayout({
    uirevision: s.runId,
    xaxis: axis("step", { anchor: "y2" }),
    yaxis: readableAxis(div, "yaxis", s.lossMeanSteps > 0 ? "loss (running mean)" : "loss", d.loss, { domain: [0.42, 1] }),
    yaxis2: axis("lr", { domain: [0, 0.32], rangemode: "tozero", nticks: 4, tickformat: "~g" }),
  });
  plot(div, data, layout);
}

export function extend(div, s, from, to) {
  const d = series(s, from, to);
  if (div.data[0].name !== lossName(s)) Plotly.restyle(div, { name: lossName(s) }, [0]);
  Plotly.extendTraces(div, { x: sameX(d.x, 2), y: [d.loss, d.lr] }, [0, 1], MAX_POINTS);
  rescale(div, "yaxis", "loss", div.data[0].y);
}
