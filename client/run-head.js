// The selected run's header (name, status, step, clip, learning rate, speed,
// points received) and the stats in the chart cards' headers.

import { RATIO_RULE, spread } from "./chart-ratio.js";
import { Charts } from "./charts.js";
import { renderControls } from "./controls.js";
import { renderNanBanner } from "./nan-banner.js";
import { renderRunLabels } from "./run-labels.js";
import { runModel, subscribe } from "./run-model.js";
import { gw, selectedRun, state } from "./state.js";
import { runStatusTitle } from "./status.js";
import { $, fmtClip, fmtInt, fmtLr, fmtNum, num, setText, statusBadgeClass } from "./util.js";

subscribe("head", () => renderRunHead()); // the run model changed the selected run's detail

export function renderRunHead() {
  const d = selectedRun();
  if (!d) return;
  $("run-name").textContent = d.name;
  document.title = `${d.name} · gradwatch`;
  $("run-id").textContent = `#${d.id}`;
  const st = $("run-status");
  st.textContent = d.status || "unknown";
  st.className = statusBadgeClass(d.status);
  st.dataset.status = d.status || "";
  st.title = runStatusTitle(d.status);
  const step = state.store && state.store.lastStep !== null ? state.store.lastStep : d.step;
  $("run-step").textContent = fmtInt(step);
  $("run-clip").textContent = fmtClip(d.clip);
  renderLr();
  renderControls();
  renderRunLabels();
}

/** The charts rendered new records (Charts onStats hook). */
export function renderStats(s) {
  updateProgress();
  const st = Charts.stats(s);
  $("stat-clip").textContent = st.clippedShare === null ? "" : `${(100 * st.clippedShare).toFixed(1)}% of steps clipped`;
  $("stat-loss").textContent = st.lastLoss === null ? "" : `loss ${fmtNum(st.lastLoss, 4)} · lr ${fmtNum(st.lastLr, 3)}`;
  $("run-sps").textContent = st.lastSps === null ? "–" : fmtNum(st.lastSps, 3);
  const step = s.lastStep;
  if (step !== null) $("run-step").textContent = fmtInt(step);
  renderLr();
  renderRatioStat(s);
  renderNanBanner();
}

/** Records received for the selected run: the test hook, the points count and the run list's step. */
export function updateProgress() {
  const s = state.store;
  if (!s) return;
  gw.steps = s.received;
  gw.lastStep = s.lastStep;
  $("run-points").textContent = fmtInt(s.received);
  runModel.noteStep(s.lastStep);
}

/** The learning rate of the newest of the last 50 steps that reported one, else null. */
export function lastLr(s) {
  if (!s) return null;
  for (let i = s.length - 1; i >= Math.max(0, s.length - 50); i--) if (s.c.lr[i] !== null) return s.c.lr[i];
  return null;
}

/** The latest learning rate: the newest reported step's, else RunDetail.lr. */
function renderLr() {
  const fromSteps = lastLr(state.store);
  const d = state.detail;
  const lr = fromSteps !== null ? fromSteps : d ? num(d.lr) : null;
  const text = lr === null || lr === undefined ? "–" : fmtLr(lr);
  setText($("run-lr"), text);
  setText($("lr-current"), lr === null || lr === undefined ? "" : `now ${text}`);
}

function renderRatioStat(s) {
  const stat = $("stat-ratio");
  if (!s.urSeen) {
    setText(stat, s.length ? "not measured" : "");
    return;
  }
  // median over variables at the newest step that has ratios
  for (let i = s.length - 1; i >= Math.max(0, s.length - 20); i--) {
    const q = spread(s.ur.map((a) => a[i]));
    if (!q) continue;
    const ratio = q.mid / RATIO_RULE;
    const hint = ratio > 10 ? " · high" : ratio < 0.1 ? " · low" : "";
    setText(stat, `median ${fmtNum(q.mid, 2)}${hint}`);
    stat.className = `stat${hint ? " stat-warn" : ""}`;
    return;
  }
}
