// Small helpers shared by the gradwatch page modules. No data ever goes
// through innerHTML: el() builds nodes and sets text with textContent.

/** A wire float ("NaN" / "Infinity" / "-Infinity" or a number) as a JS number; null stays null. */
export function num(x) {
  if (x === null || x === undefined) return null;
  if (typeof x === "boolean") return x ? 1 : 0;
  return Number(x);
}

/** Build an element: el("span", {class: "badge", dataset: {testid: "x"}}, "text", childNode). */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k === "text") node.textContent = String(v);
      else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/**
 * Plotly renders a few pseudo-HTML tags (<b>, <br>, <a href>, ...) inside
 * labels and decodes entities. Escaping & < > makes it show names literally.
 */
export function plotlyText(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function fmtNum(x, digits = 3) {
  if (x === null || x === undefined) return "–";
  if (Number.isNaN(x)) return "NaN";
  if (x === Infinity) return "∞";
  if (x === -Infinity) return "−∞";
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 1e5 || a < 1e-3) return x.toExponential(digits - 1).replace(/\.?0+e/, "e").replace("e+", "e");
  return Number(x.toPrecision(digits)).toString();
}

/** A learning rate as typed: up to 4 significant digits, plain decimals down to 1e-6. */
export function fmtLr(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return fmtNum(x);
  return String(Number(x.toPrecision(4)));
}

/** "1 step", "3 steps": n (shown as `shown`, e.g. with thousands separators) and the word, plural unless n is 1. */
export function plural(n, word, shown = n) {
  return `${shown} ${word}${n === 1 ? "" : "s"}`;
}

export function fmtInt(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US");
}

export function fmtAgo(unixSeconds) {
  if (!unixSeconds) return "";
  const d = Math.max(0, Date.now() / 1000 - unixSeconds);
  if (d < 60) return `${Math.round(d)} s ago`;
  if (d < 3600) return `${Math.round(d / 60)} min ago`;
  if (d < 86400) return `${Math.round(d / 3600)} h ago`;
  return `${Math.round(d / 86400)} d ago`;
}

export function fmtClip(clip) {
  if (!clip) return "–";
  const t = clip.threshold === null || clip.threshold === undefined ? "off (measure only)" : fmtNum(num(clip.threshold), 4);
  return `${clip.mode} · ${t}`;
}

/** The human message of a FastAPI error body ({"detail": str | [{msg, loc}]}). */
export function errorDetail(body, fallback) {
  if (!body || body.detail === undefined) return fallback;
  const d = body.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) {
    return d
      .map((e) => {
        if (typeof e === "string") return e;
        const loc = Array.isArray(e.loc) ? e.loc.filter((p) => p !== "body").join(".") : "";
        const msg = String(e.msg || JSON.stringify(e)).replace(/^Value error, /, "");
        return loc ? `${loc}: ${msg}` : msg;
      })
      .join("; ");
  }
  return JSON.stringify(d);
}

/** fetch JSON from the same origin; throws Error(message) with .status on failure. */
export async function getJSON(url, opts = {}) {
  const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, ...opts });
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  if (!resp.ok) {
    const err = new Error(errorDetail(body, `${resp.status} ${resp.statusText || "error"}`));
    err.status = resp.status;
    throw err;
  }
  return body;
}

export async function postJSON(url, data) {
  return getJSON(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(data),
  });
}

export async function patchJSON(url, data) {
  return getJSON(url, {
    method: "PATCH",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(data),
  });
}

/** The element with this id. */
export const $ = (id) => document.getElementById(id);

/** Set a node's text only when it changed (live updates touch the DOM only for real changes). */
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** fn, batched: any number of calls before the next animation frame run it once, in that frame. */
export function frameBatched(fn) {
  let raf = 0;
  return () => {
    if (!raf) raf = requestAnimationFrame(() => {
      raf = 0;
      fn();
    });
  };
}

/** The classes of a run status badge (styled per status). */
export function statusBadgeClass(status) {
  return `badge badge-${String(status || "unknown").replace(/[^a-z]/g, "")}`;
}

/** The server refused our credentials (not signed in, or signed out). */
export function isAuthError(e) {
  return e.status === 401 || e.status === 403;
}
