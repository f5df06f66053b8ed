// The control panel of the selected run: pause / resume / stop, the clip and
// learning-rate forms, what the trainer guards on its own, and the command
// log (each command's state as the trainer reports it back).

import { kindLabel } from "./alerts.js";
import { CLIP_MODES, COMMANDS } from "./protocol.js";
import { runModel } from "./run-model.js";
import { selectedRun, state } from "./state.js";
import { optimizerGroups } from "./store.js";
import { $, el, fmtLr, fmtNum, num, postJSON, setText } from "./util.js";

// ------------------------------------------------------------------ forms and buttons

/** Enable what the selected run accepts (a finished run takes no commands); show its guards. */
export function renderControls() {
  const d = selectedRun();
  if (!d) return;
  renderGuards(d);
  renderGroups(d);
  const finished = d.status === "finished";
  for (const b of document.querySelectorAll("[data-cmd]")) b.disabled = finished || b.dataset.busy === "1";
  $("clip-apply").disabled = finished;
  $("lr-apply").disabled = finished || $("lr-apply").dataset.busy === "1";
  renderSnapshots(d, finished);
  $("btn-pause").classList.toggle("is-active", d.status === "paused");
  $("controls").classList.toggle("is-finished", finished);
}

// A run with several optimizers (a GAN's): clip and learning rate for all of them, or for one group.
function renderGroups(d) {
  const names = optimizerGroups(d.meta, (d.variables || []).length).map((g) => g.name);
  const select = $("cmd-group");
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.join("\u0000") !== names.join("\u0000")) {
    const keep = select.value;
    select.replaceChildren(el("option", { value: "" }, "all"), ...names.map((n) => el("option", { value: n }, n)));
    select.value = names.includes(keep) ? keep : "";
  }
  $("group-field").hidden = names.length === 0;
}

// The steps the trainer can rewind to (run.snapshots), newest first; none: the form is off.
function renderSnapshots(d, finished) {
  const steps = (Array.isArray(d.snapshots) ? d.snapshots : []).slice().reverse().map(String);
  const select = $("rewind-step");
  const have = [...select.options].map((o) => o.value);
  if (have.join(",") !== steps.join(",")) {
    const keep = select.value;
    select.replaceChildren(...(steps.length ? steps.map((s) => el("option", { value: s }, s))
      : [el("option", { value: "" }, "no snapshot yet")]));
    if (steps.includes(keep)) select.value = keep;
  }
  $("rewind-apply").disabled = finished || steps.length === 0 || $("rewind-apply").dataset.busy === "1";
}

/** The group the clip and learning-rate commands name, if one is chosen. */
function withGroup(cmd) {
  const group = $("group-field").hidden ? "" : $("cmd-group").value;
  return group ? { ...cmd, group } : cmd;
}

// What the trainer does on its own: pause_on (the server pauses the run on those alerts), guard_nonfinite.
function renderGuards(d) {
  const parts = [];
  if (Array.isArray(d.pause_on) && d.pause_on.length) parts.push(`Pauses itself on: ${d.pause_on.map(kindLabel).join(", ")}`);
  if (d.guard_nonfinite) parts.push("skips non-finite updates");
  const p = $("run-guards");
  setText(p, parts.join(" · "));
  p.hidden = parts.length === 0;
}

/** A newly selected run: show the panel, empty, without the previous run's error. */
export function resetControls() {
  $("lr-input").value = "";
  hideControlError();
  $("controls").hidden = false;
}

export function fillClipForm(clip) {
  if (!clip) return;
  $("clip-mode").value = clip.mode || CLIP_MODES[0];
  const t = num(clip.threshold);
  $("clip-threshold").value = t === null || !Number.isFinite(t) ? "" : String(t);
}

/** Prefill the learning rate, unless the user already typed one. */
export function fillLr(lr) {
  const x = num(lr);
  if (x !== null && Number.isFinite(x) && !$("lr-input").value) $("lr-input").value = String(Number(x.toPrecision(6)));
}

function showControlError(message) {
  const box = $("control-error");
  box.textContent = message;
  box.hidden = false;
}

function hideControlError() {
  $("control-error").hidden = true;
  $("control-error").textContent = "";
}

async function sendCommand(cmd, button) {
  const id = state.selected;
  if (id === null) return;
  hideControlError();
  if (button) {
    button.dataset.busy = "1";
    button.disabled = true;
  }
  try {
    const res = await postJSON(`/api/runs/${id}/commands`, cmd);
    if (id === state.selected && res && typeof res.id === "number") {
      runModel.mergeCommand({
        id: res.id, run_id: id, type: cmd.type, mode: cmd.mode ?? null, threshold: cmd.threshold ?? null, lr: cmd.lr ?? null, group: cmd.group ?? null, step: cmd.step ?? null,
        origin: "browser", created_at: Date.now() / 1000, state: res.state || "pending", applied_step: null,
        detail: null, updated_at: Date.now() / 1000,
      });
      renderCommands();
    }
  } catch (e) {
    const code = e.status ? `${e.status}: ` : "";
    showControlError(`${cmd.type} was not sent — ${code}${e.message}`);
  } finally {
    if (button) {
      delete button.dataset.busy;
      renderControls();
      if (!state.detail) button.disabled = false;
    }
  }
}

/**
 * The number typed in `input`, or null after telling the user what to enter.
 * what: "a clip threshold"; short: "a threshold" (for "enter ... greater than 0"); example: "1.0".
 */
function readNumber(input, what, short, example) {
  const raw = input.value.trim();
  if (raw === "") {
    showControlError(`Enter ${what}: a number greater than 0, e.g. ${example}.`);
    input.focus();
    return null;
  }
  const x = Number(raw);
  if (!Number.isFinite(x)) {
    showControlError(`"${raw}" is not a number; enter ${short} greater than 0, e.g. ${example}.`);
    return null;
  }
  return x;
}

export function initControls() {
  $("clip-mode").replaceChildren(...CLIP_MODES.map((m) => el("option", { value: m }, m)));
  for (const b of document.querySelectorAll("[data-cmd]")) {
    if (!COMMANDS.includes(b.dataset.cmd)) throw new Error(`index.html: data-cmd="${b.dataset.cmd}" is not a protocol command`);
    b.addEventListener("click", () => sendCommand({ type: b.dataset.cmd }, b));
  }
  $("clip-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const threshold = readNumber($("clip-threshold"), "a clip threshold", "a threshold", "1.0");
    if (threshold !== null) sendCommand(withGroup({ type: "set_clip", mode: $("clip-mode").value, threshold }), $("clip-apply"));
  });
  $("rewind-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const step = Number($("rewind-step").value);
    if ($("rewind-step").value === "" || !Number.isInteger(step)) return;
    const cmd = { type: "rewind", step };
    if ($("rewind-with").checked) {
      const threshold = readNumber($("clip-threshold"), "a clip threshold", "a threshold", "1.0");
      const lr = readNumber($("lr-input"), "a learning rate", "a learning rate", "0.001");
      if (threshold === null || lr === null) return;
      Object.assign(cmd, { mode: $("clip-mode").value, threshold, lr });
    }
    sendCommand(cmd, $("rewind-apply"));
  });
  $("lr-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const lr = readNumber($("lr-input"), "a learning rate", "a learning rate", "0.001");
    if (lr !== null) sendCommand(withGroup({ type: "set_lr", lr }), $("lr-apply"));
  });
}

// ------------------------------------------------------------------ command log

/** The steps at which the run's applied rewinds took effect (the charts mark them). */
export function rewindSteps() {
  return [...state.commands.values()].filter((c) => c.type === "rewind" && c.state === "applied"
    && Number.isInteger(c.applied_step)).map((c) => c.applied_step);
}

function describeCommand(c) {
  if (c.type === "set_clip") {
    const parts = ["set clip"];
    if (c.mode) parts.push(c.mode);
    if (c.threshold !== null && c.threshold !== undefined) parts.push(`≤ ${fmtNum(num(c.threshold), 4)}`);
    if (c.group) parts.push(`(${c.group})`);
    return parts.join(" ");
  }
  if (c.type === "set_lr") {
    const text = c.lr === null || c.lr === undefined ? "set lr" : `set lr → ${fmtLr(num(c.lr))}`;
    return c.group ? `${text} (${c.group})` : text;
  }
  if (c.type === "rewind") {
    const parts = [`rewind to ≤ step ${c.step}`];
    if (c.threshold !== null && c.threshold !== undefined) parts.push(`clip ≤ ${fmtNum(num(c.threshold), 4)}`);
    if (c.lr !== null && c.lr !== undefined) parts.push(`lr → ${fmtLr(num(c.lr))}`);
    return parts.join(", ");
  }
  return c.type;
}

function describeState(c) {
  if (c.state === "applied") {
    const at = c.applied_step === null || c.applied_step === undefined ? "applied" : `applied at step ${c.applied_step}`;
    return c.type === "rewind" && c.detail ? `${at}: ${c.detail}` : at;
  }
  if (c.state === "rejected") return `rejected: ${c.detail || "no reason given"}`;
  return "pending";
}

export function renderCommands() {
  const cmds = [...state.commands.values()].sort((a, b) => b.id - a.id); // newest first
  const items = cmds.map((c) =>
    el("li", { class: `cmd cmd-${c.state}`, dataset: { testid: "command-entry", commandId: String(c.id), state: c.state, type: c.type } },
      el("span", { class: "cmd-what" }, describeCommand(c)),
      el("span", { class: "cmd-state", dataset: { testid: "command-state" } }, describeState(c)),
      el("span", { class: "cmd-meta muted", title: c.origin || "" },
        `#${c.id}${c.origin ? ` · ${String(c.origin).split(" (")[0]}` : ""}${c.created_at ? ` · ${new Date(c.created_at * 1000).toLocaleTimeString()}` : ""}`)),
  );
  $("cmd-log").replaceChildren(...items);
  $("cmd-empty").hidden = cmds.length > 0;
  $("cmd-count").textContent = cmds.length ? String(cmds.length) : "";
}
