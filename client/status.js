// Status shown to the user: the connection indicator in the header, the
// fatal-error bar, and the notice above the selected run.

import { gw, state } from "./state.js";
import { $ } from "./util.js";

export function setConn(s) {
  const box = $("conn");
  const text = $("conn-text");
  box.dataset.state = s.state;
  gw.connected = s.state === "connected";
  if (s.state === "connected") {
    text.textContent = "Live";
    box.title = "Connected to the gradwatch server";
  } else if (s.state === "connecting") {
    text.textContent = "Connecting…";
    box.title = "";
  } else if (s.state === "reconnecting") {
    const secs = Math.max(1, Math.round((s.retryIn || 0) / 1000));
    text.textContent = `Reconnecting in ${secs} s`;
    box.title = s.detail || "";
  } else {
    text.textContent = "Disconnected";
    box.title = s.detail || "";
  }
}

export function showFatal(message) {
  state.fatal = true;
  const f = $("fatal");
  f.textContent = message;
  f.hidden = false;
  setConn({ state: "error", detail: message });
}

/** The notice above the selected run (loading, or why it cannot be shown); null hides it. */
export function setNotice(text, kind) {
  const n = $("run-notice");
  n.hidden = !text;
  n.textContent = text || "";
  n.className = kind === "error" ? "notice notice-error" : "notice";
}

/** What each run status (protocol.js RUN_STATUSES) means, for the badge's tooltip. */
const RUN_STATUS_HELP = {
  running: "Training: steps are arriving",
  paused: "Paused from this page (or by an alert); resume to go on",
  idle: "Between two fit() calls (or watch() blocks) of the same monitor; the next one continues this run",
  interrupted: "The last fit() ended by an exception (KeyboardInterrupt, an error in a callback); " +
    "the next fit() with the same monitor continues this run",
  finished: "Ended: the trainer finished or was stopped; takes no more commands",
  disconnected: "The trainer is not connected (its process ended or the network dropped)",
};

export function runStatusTitle(status) {
  return RUN_STATUS_HELP[status] || "";
}
