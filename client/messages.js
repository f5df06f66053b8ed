// Live websocket messages after the handshake, dispatched into the page state.
// Records for the selected run are held back while its REST sync runs
// (run-sync.js), then go straight into its RunStore.

import { onAlert, prefetchRunAlerts, scheduleAlerts } from "./alert-panel.js";
import { onCompareSteps } from "./compare.js";
import { renderCommands, rewindSteps } from "./controls.js";
import { renderRunHead, updateProgress } from "./run-head.js";
import { runModel } from "./run-model.js";
import { maybeAutoSelect } from "./run-sync.js";
import { state } from "./state.js";

/** The onMessage handler of the LiveSocket, drawing with `charts`. */
export function messageHandler(charts) {
  return (msg) => {
    switch (msg.type) {
      case "runs": {
        const runs = Array.isArray(msg.runs) ? msg.runs : [];
        const seen = new Set();
        for (const r of runs) {
          seen.add(r.id);
          runModel.upsertRun(r);
        }
        runModel.keepRuns(seen);
        maybeAutoSelect();
        prefetchRunAlerts();
        break;
      }
      case "run":
        runModel.upsertRun(msg.run);
        if (msg.run && msg.run.id === state.selected && msg.run.clip && state.detail) renderRunHead();
        maybeAutoSelect();
        break;
      case "steps": {
        onCompareSteps(msg);
        if (msg.run_id !== state.selected || !Array.isArray(msg.records)) break;
        // Held while the run loads (follow.js), else into its store.
        if (state.feed.offer(msg.records)) {
          updateProgress();
          charts.schedule();
        }
        break;
      }
      case "command":
        if (msg.run_id !== state.selected || !msg.command) break;
        runModel.mergeCommand(msg.command);
        renderCommands();
        if (msg.command.type === "rewind" && state.store) {
          runModel.setRewinds(rewindSteps());
          charts.refreshGaps();
        }
        break;
      case "alert":
        onAlert(msg.run_id, msg.alert);
        break;
      case "alert_rules":
        if (msg.run_id === state.selected && msg.rules && typeof msg.rules === "object") {
          runModel.mergeRules(msg.rules);
          scheduleAlerts();
        }
        break;
      case "probe":
        if (msg.run_id !== state.selected || !msg.probe) break;
        if (state.feed.offerProbe(msg.probe)) charts.schedule();
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
