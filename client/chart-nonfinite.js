// Non-finite values per step: NaN/Inf gradient elements and non-finite weights.

import { MAX_POINTS, Plotly, axis, baseLayout, plot, sameX } from "./chart-base.js";

function series(s, from, to) {
  return { x: s.c.step.slice(from, to), nfTotal: s.c.nfTotal.slice(from, to), wnf: s.c.wnf.slice(from, to) };
}

export function draw(div, s, from) {
  const d = series(s, from, s.length);
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
    uirevision: s.runId,
    xaxis: axis("step"),
    yaxis: axis("count per step", { rangemode: "tozero" }),
  });
  plot(div, data, layout);
}

export function extend(div, s, from, to) {
  const d = series(s, from, to);
  Plotly.extendTraces(div, { x: sameX(d.x, 2), y: [d.nfTotal, d.wnf] }, [0, 1], MAX_POINTS);
}
