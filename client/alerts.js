// Alerts of gradient pathologies, rendering only: the banner for the worst open
// alert of the selected run, the alert timeline, per-kind mute switches and the
// heatmap rows each alert points at. The alert state of the page lives in
// alert-panel.js. All text goes in with textContent (el()).

import { ALERT_KINDS, ALERT_LABELS, ALERT_STATES, SEVERITIES } from "./protocol.js";
import { el, fmtInt, fmtNum } from "./util.js";

/** Severities rank as protocol.js lists them, lowest first. */
const SEVERITY_RANK = Object.fromEntries(SEVERITIES.map((s, rank) => [s, rank]));

export function kindLabel(kind) {
  return ALERT_LABELS[kind] || String(kind).replace(/_/g, " ");
}

/** The severity as styled (sev-critical / sev-warning / sev-info); an unknown one shows as a warning. */
export function severityClass(severity) {
  return Object.hasOwn(SEVERITY_RANK, severity) ? severity : "warning";
}

/** The worse of two severities (either may be null). */
export function worse(a, b) {
  if (!a || !b) return a || b || null;
  return (SEVERITY_RANK[b] ?? 0) > (SEVERITY_RANK[a] ?? 0) ? b : a;
}

/** What the empty alert list says: every kind the server checks for. */
export function noAlertsText() {
  return `No alerts for this run. gradwatch checks for: ${ALERT_KINDS.map(kindLabel).join(", ")}.`;
}

const [OPEN] = ALERT_STATES;

/** An alert is open while its `state` says so; a resolved one has a `resolved_step`. */
export function isOpen(a) {
  return !!a && a.state === OPEN;
}

function lastStepOf(a) {
  const s = a.last_step ?? a.step;
  return typeof s === "number" ? s : -1;
}

/** Newest first: by the step it was last seen, then by id. */
export function byNewest(a, b) {
  return lastStepOf(b) - lastStepOf(a) || (b.updated_at || 0) - (a.updated_at || 0) || b.id - a.id;
}

/** The alert the banner shows: worst severity first, then the newest. */
export function bannerAlert(alerts, muted) {
  let best = null;
  for (const a of alerts) {
    if (!isOpen(a) || muted(a.kind)) continue;
    if (!best) {
      best = a;
      continue;
    }
    const d = (SEVERITY_RANK[a.severity] || 0) - (SEVERITY_RANK[best.severity] || 0);
    if (d > 0 || (d === 0 && byNewest(a, best) < 0)) best = a;
  }
  return best;
}

/** The layer names an alert points at. */
export function alertLayers(a) {
  const out = [];
  if (Array.isArray(a.layers)) for (const l of a.layers) if (l !== null && l !== undefined && l !== "") out.push(String(l));
  if (a.layer !== null && a.layer !== undefined && a.layer !== "" && !out.includes(String(a.layer))) out.unshift(String(a.layer));
  return out;
}

/**
 * Heatmap rows (variables) an alert's layers point at: the variable itself, or
 * every variable of a layer (`layer/…`, or `…/layer/…` for a short layer name).
 */
export function matchVariables(layers, variables) {
  const hits = new Set();
  for (const name of layers) {
    let any = false;
    for (const v of variables) {
      if (v === name || v.startsWith(`${name}/`)) {
        hits.add(v);
        any = true;
      }
    }
    if (!any) for (const v of variables) if (v.includes(`/${name}/`) || v.endsWith(`/${name}`)) hits.add(v);
  }
  return [...hits];
}

/**
 * Heatmap highlights [{variable, step, severity, kind}] merged per variable:
 * the earliest step, the worst severity, and every kind (in `kinds`).
 */
export function mergeHighlights(list) {
  const byVar = new Map();
  for (const h of list) {
    const old = byVar.get(h.variable);
    if (!old) byVar.set(h.variable, { ...h, kinds: [h.kind] });
    else {
      old.step = Math.min(old.step, h.step);
      old.severity = worse(old.severity, h.severity);
      if (!old.kinds.includes(h.kind)) old.kinds.push(h.kind);
    }
  }
  return [...byVar.values()];
}

export function evidenceText(evidence) {
  if (!evidence || typeof evidence !== "object") return "";
  return Object.entries(evidence).filter(([, v]) => v !== null && v !== undefined).slice(0, 8)
    .map(([k, v]) => `${k.replace(/_/g, " ")} ${fmtEvidence(v)}`).join(" · ");
}

function fmtEvidence(v) {
  if (typeof v === "number") return fmtNum(v, 3);
  if (v === "NaN" || v === "Infinity" || v === "-Infinity") return fmtNum(Number(v));
  return String(v);
}

export function stepRange(a) {
  const first = a.step;
  const last = a.last_step;
  if (typeof last === "number" && last !== first) return `steps ${fmtInt(first)}–${fmtInt(last)}`;
  return `step ${fmtInt(first)}`;
}

// ------------------------------------------------------------------ banner

export function renderBanner(nodes, alert, others, muteHandler) {
  const { banner } = nodes;
  if (!alert) {
    banner.hidden = true;
    delete banner.dataset.kind;
    delete banner.dataset.severity;
    delete banner.dataset.alertId;
    return;
  }
  banner.hidden = false;
  banner.dataset.kind = alert.kind;
  banner.dataset.severity = alert.severity;
  banner.dataset.alertId = String(alert.id);
  banner.className = `alert-banner sev-${severityClass(alert.severity)}`;
  nodes.kind.textContent = kindLabel(alert.kind);
  nodes.sev.textContent = alert.severity;
  const layers = alertLayers(alert);
  const where = [];
  if (layers.length) where.push(`in ${layers.slice(0, 3).join(", ")}${layers.length > 3 ? ` and ${layers.length - 3} more` : ""}`);
  where.push(`first seen at step ${fmtInt(alert.step)}`);
  if (typeof alert.last_step === "number" && alert.last_step !== alert.step) where.push(`last at ${fmtInt(alert.last_step)}`);
  if (alert.count > 1) where.push(`episode ${fmtInt(alert.count)}`);
  nodes.where.textContent = where.join(" · ");
  nodes.more.textContent = others > 0 ? `+${others} more open` : "";
  nodes.message.textContent = alert.message || "";
  nodes.evidence.textContent = evidenceText(alert.evidence);
  const latest = latestText(alert);
  nodes.latest.textContent = latest;
  nodes.latest.hidden = !latest;
  const remedies = Array.isArray(alert.remedies) ? alert.remedies : [];
  nodes.remedies.replaceChildren(...remedies.map((r) => el("li", {}, String(r))));
  nodes.remediesWrap.hidden = remedies.length === 0;
  nodes.mute.onclick = () => muteHandler(alert.kind, true);
}

/** The episode's newest finding after it was raised, at its own step ("" when none). */
export function latestText(a) {
  const u = a && a.latest;
  if (!u || typeof u !== "object" || typeof u.step !== "number" || u.step === a.step) return "";
  return `Update at step ${fmtInt(u.step)}: ${u.message || evidenceText(u.evidence)}`;
}

// ------------------------------------------------------------------ timeline

/** Open alerts in `nodes.open`, resolved ones apart in `nodes.resolved` (each newest first). */
export function renderTimeline(nodes, alerts, muted) {
  const open = alerts.filter(isOpen);
  const resolved = alerts.filter((a) => !isOpen(a));
  nodes.open.replaceChildren(...timelineItems(open, muted));
  nodes.resolved.replaceChildren(...timelineItems(resolved, muted));
  nodes.openEmpty.hidden = open.length > 0 || alerts.length === 0;
  nodes.resolvedWrap.hidden = resolved.length === 0;
  nodes.resolvedCount.textContent = resolved.length ? `(${fmtInt(resolved.length)})` : "";
  nodes.empty.hidden = alerts.length > 0;
}

function timelineItems(alerts, muted) {
  const sorted = [...alerts].sort(byNewest);
  return sorted.slice(0, 300).map((a) => {
    const sev = severityClass(a.severity);
    const layers = alertLayers(a);
    const evidence = evidenceText(a.evidence);
    const isMuted = muted(a.kind);
    const open = isOpen(a);
    const latest = latestText(a);
    return el("li", {
      class: `alert-entry sev-${sev}${isMuted ? " is-muted" : ""}${open ? "" : " is-closed"}`,
      dataset: { testid: "alert-entry", kind: a.kind, severity: sev, layer: a.layer ?? "", alertId: String(a.id),
        state: String(a.state) },
      title: [a.message, evidence, latest].filter(Boolean).join("\n"),
    },
    el("span", { class: "ae-dot", "aria-hidden": "true" }),
    el("span", { class: "ae-main" },
      el("span", { class: "ae-kind" }, kindLabel(a.kind)),
      layers.length ? el("bdi", { class: "ae-layer" }, layers.length > 1 ? `${layers[0]} +${layers.length - 1}` : layers[0]) : null,
      isMuted ? el("span", { class: "ae-tag" }, "muted") : null,
      a.count > 1 ? el("span", { class: "ae-tag" }, `episode ${fmtInt(a.count)}`) : null,
      open || typeof a.resolved_step !== "number" ? null
        : el("span", { class: "ae-tag", dataset: { testid: "alert-resolved-step" } }, `resolved at step ${fmtInt(a.resolved_step)}`)),
    el("span", { class: "ae-steps" }, stepRange(a)),
    el("span", { class: "ae-msg" }, a.message || evidence));
  });
}

// ------------------------------------------------------------------ rules (mute switches)

function paramsText(params) {
  if (!params || typeof params !== "object") return "";
  return Object.entries(params).map(([k, v]) => `${k} = ${fmtEvidence(v)}`).join(", ");
}

/**
 * rules: {kind: {muted, params}} or null when unknown; busy: Set of kinds in flight.
 */
export function renderRules(list, rules, busy, available, onToggle) {
  const items = ALERT_KINDS.map((kind) => {
    const rule = rules && rules[kind];
    const muted = !!(rule && rule.muted);
    const known = !!rule;
    const btn = el("button", {
      type: "button",
      class: `rule-switch${muted ? " is-muted" : ""}`,
      role: "switch",
      "aria-checked": muted ? "false" : "true",
      disabled: !available || !known || busy.has(kind),
      dataset: { testid: `alert-mute-${kind}`, kind, muted: muted ? "true" : "false" },
      title: `${muted ? "Muted: click to alert on" : "On: click to mute"} ${kindLabel(kind)}${rule && rule.params ? `\n${paramsText(rule.params)}` : ""}`,
      onclick: () => onToggle(kind, !muted),
    },
    el("span", { class: "rs-track", "aria-hidden": "true" }, el("span", { class: "rs-knob" })),
    el("span", { class: "rs-label" }, kindLabel(kind)),
    el("span", { class: "rs-state" }, busy.has(kind) ? "…" : known ? (muted ? "muted" : "on") : "–"));
    return el("li", {}, btn);
  });
  list.replaceChildren(...items);
}

// ------------------------------------------------------------------ run list badge

/** {count, severity, kinds} of a run's open alerts, from its alert map (id -> AlertView). */
export function summarize(alertMap) {
  let count = 0;
  let severity = null;
  const kinds = new Set();
  if (alertMap) {
    for (const a of alertMap.values()) {
      if (!isOpen(a)) continue;
      count += 1;
      kinds.add(a.kind);
      severity = worse(severity, severityClass(a.severity));
    }
  }
  return { count, severity, kinds: [...kinds] };
}
