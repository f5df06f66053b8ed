// The run list in the sidebar, newest first, with each run's status, step,
// age, tags and open-alert badge, filtered (run-filter.js), each with a box to
// tick it for comparison.

import { kindLabel, severityClass, summarize } from "./alerts.js";
import { filterActive, renderTagOptions, runMatches } from "./run-filter.js";
import { subscribe } from "./run-model.js";
import { state } from "./state.js";
import { runStatusTitle } from "./status.js";
import { MAX_COMPARE } from "./protocol.js";
import { $, el, fmtAgo, fmtInt, frameBatched, plural, setText, statusBadgeClass } from "./util.js";

/** Render the run list on the next animation frame (coalesces any number of calls). */
export const scheduleRunList = frameBatched(renderRunList);
subscribe("runs", scheduleRunList); // the run model changed a run's data

export function sortedRuns() {
  return [...state.runs.values()].sort((a, b) => (b.created_at || 0) - (a.created_at || 0) || b.id - a.id);
}

// Run list items are kept and updated in place (keyed by run id), so a
// click or hover is never interrupted by a live update replacing the node.
const runItems = new Map(); // id -> {li, a, pick, name, status, step, tags, age, alerts, right}

function makeRunItem(id) {
  const name = el("span", { class: "run-name", dataset: { testid: "run-item-name" } });
  const status = el("span", { dataset: { testid: "run-item-status" } });
  const step = el("span", { dataset: { testid: "run-item-step" } });
  const age = el("span", { class: "run-age" });
  const alerts = el("span", { class: "run-alerts", dataset: { testid: "run-item-alerts" } });
  const right = el("span", { class: "run-badges" }, status);
  const a = el("a", { href: `#run=${id}`, class: "run-link" },
    el("span", { class: "run-line1" }, name, right),
    el("span", { class: "run-line2 muted" }, el("span", {}, `#${id}`), step, age));
  const tags = el("span", { class: "run-tags", dataset: { testid: "run-item-tags" } });
  a.append(tags);
  const pick = el("input", { type: "checkbox", class: "run-pick", "aria-label": `compare run ${id}`,
    dataset: { testid: "run-pick" }, onchange: () => togglePick(id, pick.checked) });
  const li = el("li", { class: "run-item", dataset: { testid: "run-item", runId: String(id) } }, pick, a);
  return { li, a, pick, name, status, step, tags, age, alerts, right };
}

function togglePick(id, on) {
  if (on && state.picked.size < MAX_COMPARE) state.picked.add(id);
  else state.picked.delete(id);
  renderRunList();
}

function renderTags(node, tags) {
  const list = Array.isArray(tags) ? tags : [];
  if (node.dataset.tags === list.join(" ")) return;
  node.dataset.tags = list.join(" ");
  node.replaceChildren(...list.map((t) => el("span", { class: "tag" }, t)));
}

// The Compare button takes 2 to MAX_COMPARE ticked runs.
function renderCompareBar() {
  const n = state.picked.size;
  const btn = $("btn-compare");
  btn.disabled = n < 2;
  setText(btn, n ? `Compare ${n}` : "Compare");
  setText($("compare-hint"), n >= MAX_COMPARE ? `At most ${MAX_COMPARE} runs.` : `Tick 2–${MAX_COMPARE} runs to compare them.`);
}

export function renderRunList() {
  const list = $("run-list");
  renderTagOptions();
  const all = sortedRuns();
  const runs = all.filter(runMatches);
  const keep = new Set(runs.map((r) => r.id));
  for (const id of state.picked) if (!state.runs.has(id)) state.picked.delete(id);
  for (const [id, it] of runItems) {
    if (!keep.has(id)) {
      it.li.remove();
      runItems.delete(id);
    }
  }
  let prev = null;
  for (const r of runs) {
    let it = runItems.get(r.id);
    if (!it) {
      it = makeRunItem(r.id);
      runItems.set(r.id, it);
    }
    const selected = r.id === state.selected;
    it.li.classList.toggle("selected", selected);
    if (selected) it.a.setAttribute("aria-current", "true");
    else it.a.removeAttribute("aria-current");
    it.li.dataset.status = r.status || "";
    setText(it.name, r.name);
    it.name.title = r.name;
    setText(it.status, r.status || "unknown");
    it.status.className = statusBadgeClass(r.status);
    it.status.title = runStatusTitle(r.status);
    setText(it.step, r.step === null || r.step === undefined ? "no steps yet" : `step ${fmtInt(r.step)}`);
    setText(it.age, fmtAgo(r.updated_at));
    renderTags(it.tags, r.tags);
    it.pick.checked = state.picked.has(r.id);
    it.pick.disabled = !it.pick.checked && state.picked.size >= MAX_COMPARE;
    renderRunBadge(it, r);
    // keep DOM order = sorted order, moving nodes only when needed
    const want = prev ? prev.nextSibling : list.firstChild;
    if (want !== it.li) list.insertBefore(it.li, want);
    prev = it.li;
  }
  $("runs-empty").hidden = all.length > 0;
  $("runs-filtered").hidden = runs.length > 0 || all.length === 0;
  $("runs-count").textContent = filterActive() ? `${runs.length} of ${all.length}` : all.length ? String(all.length) : "";
  renderCompareBar();
}

// Open alerts of a run: from the alerts seen (REST and live), else a count the
// run summary may carry.
function renderRunBadge(it, r) {
  const sum = summarize(state.runAlerts.get(r.id));
  // RunSummary.alerts = {warning: n, critical: n}: counts of alerts the server holds for the run
  const counts = r.alerts && typeof r.alerts === "object" ? r.alerts : null;
  if (counts) {
    const w = Number(counts.warning) || 0;
    const c = Number(counts.critical) || 0;
    if (w + c > sum.count) sum.count = w + c;
    if (c > 0) sum.severity = "critical";
    else if (w > 0 && !sum.severity) sum.severity = "warning";
  }
  if (!sum.count) {
    if (it.alerts.isConnected) it.alerts.remove();
    return;
  }
  const sev = severityClass(sum.severity);
  setText(it.alerts, `▲ ${sum.count}`);
  it.alerts.className = `run-alerts sev-${sev}`;
  it.alerts.dataset.severity = sev;
  it.alerts.dataset.count = String(sum.count);
  const label = `${plural(sum.count, "open alert")}${sum.kinds.length ? `: ${sum.kinds.map(kindLabel).join(", ")}` : ""}`;
  it.alerts.title = label;
  it.alerts.setAttribute("aria-label", label);
  if (!it.alerts.isConnected) it.right.prepend(it.alerts);
}
