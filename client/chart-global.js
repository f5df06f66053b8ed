// Global gradient norm and clipping: the norm against the clip threshold
// (log, top) and the clip scale and recent clipped share (bottom); grey bands
// for gaps in the stream and thin red lines at skipped (non-finite) steps. With gradient
// accumulation the line is each micro-batch's gradient and dots mark the averaged gradient that
// each update step clipped and applied.

import { MAX_POINTS, PALETTE, Plotly, axis, baseLayout, col, fin, plot, pos, sameX } from "./chart-base.js";

const MAX_SKIP_SHAPES = 300;

function series(s, from, to) {
  const c = s.c;
  const x = c.step.slice(from, to);
  return {
    x,
    gnorm: col(c.gnorm, from, to, pos),
    thr: col(c.thr, from, to, pos),
    scale: col(c.scale, from, to, fin),
    share: col(c.clipShare, from, to, fin),
    skipX: x.filter((_, i) => c.skipped[from + i]),
    acc: col(c.accnorm, from, to, pos),
  };
}

function gapShapes(s) {
  return s.gaps.map((g) => ({
    type: "rect", xref: "x", yref: "paper", x0: g.from_step, x1: g.to_step, y0: 0, y1: 1,
    fillcolor: "rgba(107,118,133,0.12)", line: { width: 0 }, layer: "below",
  }));
}

// Gaps (grey bands), rewinds (dashed purple lines just before the first step after each) and skipped
// steps (thin red lines, the most recent MAX_SKIP_SHAPES).
function shapes(s) {
  const out = gapShapes(s);
  for (const step of s.rewinds || []) {
    out.push({ type: "line", xref: "x", yref: "paper", x0: step - 0.5, x1: step - 0.5, y0: 0, y1: 1,
      line: { color: "rgba(123,44,191,0.8)", width: 1.5, dash: "dash" }, name: "rewind" });
  }
  const c = s.c;
  const skips = [];
  for (let i = c.step.length - 1; i >= 0 && skips.length < MAX_SKIP_SHAPES; i--) if (c.skipped[i]) skips.push(c.step[i]);
  for (const x of skips) {
    out.push({ type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1, layer: "below",
      line: { color: "rgba(214,40,57,0.35)", width: 1 } });
  }
  return out;
}

export function draw(div, s, from) {
  const d = series(s, from, s.length);
  const data = [
    {
      name: s.accumulating ? "global norm (each micro-batch)" : "global norm", x: d.x, y: d.gnorm, type: "scatter",
      mode: "lines", line: { color: PALETTE[0], width: 1.5 },
    },
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
      showlegend: s.skippedCount > 0,
    },
    {
      name: "averaged gradient (update step)", x: d.x, y: d.acc, type: "scatter", mode: "markers",
      marker: { size: 5, color: PALETTE[4] }, showlegend: s.accumulating,
      hovertemplate: "step %{x}: update with the averaged accumulated gradient, norm %{y:.3g}<extra></extra>",
    },
  ];
  const layout = baseLayout({
    uirevision: s.runId,
    xaxis: axis("step", { anchor: "y2" }),
    yaxis: axis("‖g‖ (log)", { type: "log", domain: [0.4, 1], nticks: 6 }),
    yaxis2: axis("scale", { domain: [0, 0.3], range: [0, 1.05] }),
    shapes: shapes(s),
  });
  plot(div, data, layout);
}

export function extend(div, s, from, to) {
  const d = series(s, from, to);
  Plotly.extendTraces(div, { x: [...sameX(d.x, 4), d.skipX, d.x], y: [d.gnorm, d.thr, d.scale, d.share, d.skipX.map(() => 1), d.acc] },
    [0, 1, 2, 3, 4, 5], MAX_POINTS);
  if (s.accumulating && !div.data[5].showlegend) {
    Plotly.restyle(div, { showlegend: true }, [5]);
    Plotly.restyle(div, { name: "global norm (each micro-batch)" }, [0]);
  }
  if (d.skipX.length) {
    Plotly.relayout(div, { shapes: shapes(s) });
    if (!div.data[4].showlegend) Plotly.restyle(div, { showlegend: true }, [4]);
  }
}

/** New gaps or rewinds arrived: redraw the bands and lines. */
export function refreshGaps(div, s) {
  if (div._gwPlotted) Plotly.relayout(div, { shapes: shapes(s) });
}
