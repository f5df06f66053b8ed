// The alerts of the selected run as the page holds them: merged from REST and
// live `alert` messages, shown in the banner, the timeline, the mute switches,
// the card's stat and as heatmap highlights; plus every run's alerts for the
// run list badges. Rendering helpers are in alerts.js.

import {
  alertLayers, bannerAlert, isOpen, kindLabel, matchVariables, mergeHighlights, noAlertsText, renderBanner, renderRules, renderTimeline,
  severityClass,
} from "./alerts.js";
import { runModel } from "./run-model.js";
import { sortedRuns } from "./run-list.js";
import { state } from "./state.js";
import { $, el, fmtInt, frameBatched, getJSON, isAuthError, patchJSON } from "./util.js";

let charts = null;

export function initAlertPanel(theCharts) {
  charts = theCharts;
  $("alerts-empty").textContent = noAlertsText();
}

/** A live `alert` message, of any run. */
export function onAlert(runId, a) {
  if (typeof runId !== "number" || !a || typeof a.id !== "number") return;
  if (runModel.alertSeen(runId, a)) scheduleAlerts();
}

function isMuted(kind) {
  return !!(state.rules && state.rules[kind] && state.rules[kind].muted);
}

// Alert rendering is batched to one update per animation frame, like the charts.
export const scheduleAlerts = frameBatched(renderAlertsNow);

const bannerNodes = {
  banner: $("alert-banner"), kind: $("ab-kind"), sev: $("ab-sev"), where: $("ab-where"), more: $("ab-more"),
  message: $("ab-message"), evidence: $("ab-evidence"), latest: $("ab-latest"), remedies: $("ab-remedies"), remediesWrap: $("ab-remedies-wrap"), mute: $("ab-mute"),
};

const timelineNodes = {
  open: $("alert-list"), openEmpty: $("alerts-none-open"), resolved: $("alert-list-resolved"),
  resolvedWrap: $("alerts-resolved"), resolvedCount: $("alerts-resolved-count"), empty: $("alerts-empty"),
};

export function renderAlertsNow() {
  const alerts = [...state.alerts.values()];
  const top = bannerAlert(alerts, isMuted);
  const open = alerts.filter((a) => isOpen(a) && !isMuted(a.kind));
  renderBanner(bannerNodes, top, Math.max(0, open.length - 1), setMuted);
  renderTimeline(timelineNodes, alerts, isMuted);
  renderRules($("rule-list"), state.rules, state.rulesBusy, state.rulesAvailable, setMuted);
  const note = $("rules-note");
  if (!state.rulesAvailable && state.store) {
    note.hidden = false;
    note.textContent = "This server does not offer alert rules.";
  } else if (note.dataset.error !== "1") {
    note.hidden = true;
  }
  const stat = $("stat-alerts");
  const crit = open.filter((a) => a.severity === "critical").length;
  stat.textContent = open.length ? `${open.length} open${crit ? ` · ${crit} critical` : ""}` : state.store ? "none" : "";
  stat.className = `stat ${crit ? "stat-bad" : open.length ? "stat-warn" : "stat-ok"}`;
  // heatmap rows of open, unmuted alerts, from the step each was first seen
  const variables = state.store ? state.store.variables : [];
  const hl = [];
  for (const a of open) {
    for (const v of matchVariables(alertLayers(a), variables)) {
      hl.push({ variable: v, step: a.step, severity: a.severity, kind: a.kind });
    }
  }
  charts.setHighlights(hl);
  renderHighlightList(hl);
}

function renderHighlightList(hl) {
  const items = mergeHighlights(hl).slice(0, 40).map((h) =>
    el("li", {
      class: `heat-hl-item sev-${severityClass(h.severity)}`,
      dataset: { testid: "heatmap-highlight", variable: h.variable, severity: h.severity },
      title: `${h.variable}: ${h.kinds.map(kindLabel).join(", ")} since step ${h.step}`,
    },
    el("bdi", { class: "hl-name" }, h.variable),
    el("span", { class: "hl-since" }, `since ${fmtInt(h.step)}`)));
  $("heat-hl-list").replaceChildren(...items);
  $("heat-hl").hidden = items.length === 0;
}

async function setMuted(kind, muted) {
  const id = state.selected;
  if (id === null || state.rulesBusy.has(kind)) return;
  const note = $("rules-note");
  runModel.setRuleBusy(kind, true);
  scheduleAlerts();
  try {
    const res = await patchJSON(`/api/runs/${id}/alert-rules/${encodeURIComponent(kind)}`, { muted });
    if (id !== state.selected) return;
    let rule = null;
    if (res && typeof res === "object" && typeof res.muted === "boolean") rule = res;
    else if (res && res[kind] && typeof res[kind] === "object") rule = res[kind];
    else if (res && res.rule && typeof res.rule === "object") rule = res.rule;
    runModel.mergeRule(kind, rule || { muted });
    delete note.dataset.error;
  } catch (e) {
    if (id !== state.selected) return;
    note.dataset.error = "1";
    note.hidden = false;
    note.textContent = `Could not ${muted ? "mute" : "unmute"} ${kindLabel(kind)} — ${e.status ? `${e.status}: ` : ""}${e.message}`;
  } finally {
    runModel.setRuleBusy(kind, false);
    scheduleAlerts();
  }
}

// Badges of runs that are not selected: fetch their alerts once per connection
// (newest runs first, one request at a time); live `alert` messages keep them current.
let prefetchSeq = 0;
export async function prefetchRunAlerts() {
  if (state.alertsRouteMissing) return;
  const seq = ++prefetchSeq;
  for (const r of sortedRuns().slice(0, 20)) {
    if (seq !== prefetchSeq || state.alertsRouteMissing) return;
    if (r.id === state.selected || (r.alerts && typeof r.alerts === "object")) continue; // counts come with the run
    try {
      const list = await getJSON(`/api/runs/${r.id}/alerts`);
      runModel.runAlertsFetched(r.id, list);
    } catch (e) {
      if (e.status === 404 && !/does not exist/.test(e.message)) runModel.noAlertsRoute();
      if (isAuthError(e)) return;
    }
  }
}
