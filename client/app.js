// gradwatch dashboard: wires the page's modules together and starts it.
//   run-list.js     the runs in the sidebar (run-filter.js: name, status, tag)
//   run-labels.js   the selected run's tags and note
//   compare.js      the comparison view of 2-8 runs (chart-compare.js)
//   run-sync.js     selecting a run (also via #run=ID), load-then-follow (follow.js)
//   messages.js     live websocket messages into the page state
//   run-head.js     the selected run's header and card stats
//   controls.js     training controls and the command log
//   alert-panel.js  alerts: banner, timeline, mute switches, heatmap highlights
//   nan-banner.js   NaN/Inf banner and per-variable list
//   status.js       connection indicator, fatal error, run notice
//   charts.js       the live charts (chart-*.js, one per chart)
//   run-model.js    the one writer of the run state; views subscribe to its changes
//   follow.js       load-then-follow of one run (run view and comparison)
//   state.js        the state the views read, and the window.gradwatch test hook

import { initAlertPanel } from "./alert-panel.js";
import { Charts } from "./charts.js";
import { initCompare, resyncCompare } from "./compare.js";
import { initControls } from "./controls.js";
import { LiveSocket } from "./live.js";
import { messageHandler } from "./messages.js";
import { renderStats } from "./run-head.js";
import { initRunFilter } from "./run-filter.js";
import { initRunLabels } from "./run-labels.js";
import { renderRunList, scheduleRunList } from "./run-list.js";
import { connected, initRunSync, restFallback, runIdFromHash, selectRun, syncRun } from "./run-sync.js";
import { gw, state } from "./state.js";
import { setConn, showFatal } from "./status.js";
import { $, errorDetail } from "./util.js";

window.gradwatch = gw; // the test/automation hook

const charts = new Charts(
  {
    heatmap: $("chart-heatmap"),
    global: $("chart-global-norm"),
    nonfinite: $("chart-nonfinite"),
    bn: $("chart-bn"),
    losslr: $("chart-loss-lr"),
    ratio: $("chart-update-ratio"),
    probe: $("chart-probe"),
  },
  {
    onStats: renderStats,
    onProbe: (shown) => {
      $("card-probe").hidden = !shown;
    },
  },
);

const live = new LiveSocket({
  onOpen: () => {
    connected();
    // New socket: (re)subscribe and backfill from REST since the last step seen.
    if (state.selected !== null) syncRun();
    resyncCompare();
  },
  onMessage: messageHandler(charts),
  onState: (s) => {
    setConn(s);
    if (s.state === "reconnecting") restFallback();
  },
  onFatal: showFatal,
});

initAlertPanel(charts);
initControls();
initRunSync(charts, live);
initRunFilter(renderRunList);
initRunLabels();
initCompare(live);

// Refresh "x s ago" labels now and then.
setInterval(scheduleRunList, 15000);

// Expose a little more for debugging from the console (not a stable API).
gw._debug = { state, charts, live, errorDetail };

function start() {
  if (!window.Plotly) {
    showFatal("plotly.min.js did not load from /static/plotly.min.js; charts cannot be drawn. Is the gradwatch server installed with its [server] extras?");
  }
  const id = runIdFromHash();
  if (id !== null) selectRun(id); // fetches once the socket is up (or has failed)
  live.connect();
}

start();
