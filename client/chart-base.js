// What every chart module shares: the Plotly handle, the page's colours and
// layout defaults, and the value filters that decide what a trace may show.
// Text that comes from the run (variable and layer names) goes through
// plotlyText() (util.js) before it reaches a label.

// plotly.min.js is a classic script loaded before these modules; looked up lazily.
export const Plotly = new Proxy({}, { get: (_, k) => window.Plotly[k] });

export const MAX_POINTS = 5000; // points per line trace kept on screen

export const PALETTE = ["#4361ee", "#f77f00", "#2a9d8f", "#e63946", "#7b2cbf", "#588157", "#d4a017", "#0096c7", "#c9184a", "#6c757d"];
export const INK = "#1f2733";
export const MUTED = "#6b7685";
const GRID = "#eceff3";

const CONFIG = {
  responsive: true,
  displaylogo: false,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toImage"],
};

export function baseLayout(extra) {
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

/** An axis with the page's grid colours, titled `title` (muted, 11 px) unless it is null. */
export function axis(title, extra) {
  const t = { font: { size: 11, color: MUTED } };
  if (title !== null) t.text = title;
  return {
    gridcolor: GRID,
    zerolinecolor: GRID,
    linecolor: "#d5dae1",
    tickfont: { color: MUTED },
    title: t,
    automargin: true,
    ...extra,
  };
}

/** A grey note in the middle of an empty chart. */
export function centerNote(text) {
  return { text, xref: "paper", yref: "paper", x: 0.5, y: 0.5, showarrow: false, font: { color: MUTED, size: 12 } };
}

/** Draw (or redraw) a chart; `_gwPlotted` tells the page which divs hold a plot to resize or purge. */
export function plot(div, data, layout) {
  Plotly.react(div, data, layout, CONFIG);
  div._gwPlotted = true;
}

/** x: a positive finite number, else null (log axes). */
export function pos(x) {
  return x !== null && Number.isFinite(x) && x > 0 ? x : null;
}

/** x: a finite number, else null. */
export function fin(x) {
  return x !== null && Number.isFinite(x) ? x : null;
}

/** Rows [from, to) of a store column, each through f. */
export function col(arr, from, to, f) {
  return arr.slice(from, to).map(f);
}

/** The same x array for k traces (Plotly.extendTraces wants one per trace). */
export function sameX(x, k) {
  return Array.from({ length: k }, () => x);
}

/** Positive finite values spanning more than this ratio get a log axis. */
export const LOG_SPAN = 1e3;
/** A linear range wider than this many times the 1st–99th percentile spread is cut to that spread. */
const OUTLIER_SPREAD = 20;

/**
 * y-axis settings that keep `values` readable when one of them explodes (a 4e22 loss would
 * otherwise flatten the whole curve): a log axis when every finite value is positive and they
 * span more than LOG_SPAN; else, when a few outliers lie far outside the bulk, a linear range over
 * the 1st–99th percentiles (padded; the outliers run off the top or bottom); else autorange.
 * `key` names the choice, so a live chart relays out only when it changes.
 */
export function readableScale(values) {
  const v = values.filter((x) => x !== null && Number.isFinite(x));
  let lo = Infinity;
  let hi = -Infinity;
  for (const x of v) {
    if (x < lo) lo = x;
    if (x > hi) hi = x;
  }
  if (v.length >= 2 && lo > 0 && hi / lo > LOG_SPAN) return { key: "log", axis: { type: "log", autorange: true } };
  if (v.length >= 20) {
    const stride = Math.ceil(v.length / 20000); // percentiles from a sample: cheap on every live update
    const sorted = Float64Array.from({ length: Math.ceil(v.length / stride) }, (_, i) => v[i * stride]).sort();
    const q = (p) => sorted[Math.round(p * (sorted.length - 1))];
    const p1 = q(0.01);
    const p99 = q(0.99);
    const spread = p99 - p1 || Math.abs(p99) || 1;
    if (hi - lo > OUTLIER_SPREAD * spread) {
      const range = [p1 - 0.15 * spread, p99 + 0.15 * spread];
      return { key: `robust:${range.map((x) => x.toPrecision(2)).join(":")}`, axis: { type: "linear", autorange: false, range } };
    }
  }
  return { key: "linear", axis: { type: "linear", autorange: true } };
}

function scaledTitle(title, scale) {
  if (scale.key === "log") return `${title} (log)`;
  return scale.key === "linear" ? title : `${title} (outliers off scale)`;
}

/** Axis `name` (e.g. "yaxis") titled `title`, readable for `values` (readableScale); remembered on the div. */
export function readableAxis(div, name, title, values, extra) {
  const scale = readableScale(values);
  if (!div._gwScale) div._gwScale = {};
  div._gwScale[name] = scale.key;
  return axis(scaledTitle(title, scale), { ...extra, ...scale.axis });
}

/** After points were added: re-decide axis `name` from `values`; relays out only when the choice changes. */
export function rescale(div, name, title, values) {
  const scale = readableScale(values);
  if (!div._gwScale) div._gwScale = {};
  if (div._gwScale[name] === scale.key) return;
  div._gwScale[name] = scale.key; // an explosion arrived, or scrolled out of the window
  const update = { [`${name}.title.text`]: scaledTitle(title, scale) };
  for (const [k, v] of Object.entries(scale.axis)) update[`${name}.${k}`] = v;
  Plotly.relayout(div, update);
}
