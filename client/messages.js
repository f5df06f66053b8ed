// Live websocket messages after the handshake, dispatched into the page state.
// Records for the selected run are held back while its REST sync runs
// (run-sync.js), then go straight into its RunStore.

import { onAlert, prefetchRunAlerts, scheduleAlerts } from "./alert-panel.js";
import { onCompareSteps } from "./compare.js";
import { mergeCommand, renderCommands, rewindSteps } from "./controls.js";
import { renderRunHead, updateProgress } from "./run-head.js";
import { scheduleRunList } from "./run-list.js";
import { maybeAutoSelect, upsertRun } from "./run-sync.js";
import { state } from "./state.js";

const MAX_BUFFERED = 50000;

/** The onMessage handler of the LiveSocket, drawing with `charts`. */
export function messageHandler(charts) {
  return (msg) => {
    switch (msg.type) {
      case "runs": {
        const runs = Array.isArray(msg.runs) ? msg.runs : [];
        const seen = new Set();
        for (const r of runs) {
          seen.add(r.id);
          upsertRun(r);
        }
        for (const id of [...state.runs.keys()]) if (!seen.has(id) && id !== state.selected) state.runs.delete(id);
        scheduleRunList();
        maybeAutoSelect();
        prefetchRunAlerts();
        break;
      }
      case "run":
        upsertRun(msg.run);
        if (msg.run && msg.run.id === state.selected && msg.run.clip && state.detail) renderRunHead();
        maybeAutoSelect();
        break;
      case "steps": {
        onCompareSteps(msg);
        if (msg.run_id !== state.selected || !Array.isArray(msg.records)) break;
        if (state.buffering || !state.store) {
          state.buffer.push(...msg.records);
          // bound memory if REST never answers; the next sync backfills from REST anyway
          if (state.buffer.length > MAX_BUFFERED) state.buffer.splice(0, state.buffer.length - MAX_BUFFERED);
          break;
        }
        let kept = 0;
        for (const r of msg.records) if (state.store.addRecord(r)) kept += 1;
        if (kept) {
          updateProgress();
          charts.schedule();
        }
        break;
      }
      case "command":
        if (msg.run_id !== state.selected || !msg.command) break;
        mergeCommand(msg.command);
        renderCommands();
        if (msg.command.type === "rewind" && state.store) {
          state.store.rewinds = rewindSteps();
          charts.refreshGaps();
        }
        break;
      case "alert":
        onAlert(msg.run_id, msg.alert);
        break;
      case "alert_rules":
        if (msg.run_id === state.selected && msg.rules && typeof msg.rules === "object") {
          state.rules = { ...(state.rules || {}), ...msg.rules };
          scheduleAlerts();
        }
        break;
      case "probe":
        if (msg.run_id !== state.selected || !msg.probe) break;
        if (state.buffering || !state.store) {
          state.probeBuffer.push(msg.probe);
          break;
        }
        if (state.store.addProbe(msg.probe)) charts.schedule();
        break;
      case "gap":
        if (msg.run_id !== state.selected || !state.store) break;
        state.store.mergeGaps([msg]);
        charts.refreshGaps();
        break;
      default:
        break; // unknown types are ignored (forward compatible)
    }
  };
}
