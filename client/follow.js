// Load-then-follow, for one run: shared by the run view (run-sync.js) and the
// comparison (compare.js). The caller subscribes to the run's live records
// FIRST, then loads; live records that arrive meanwhile are held, and merged
// after the REST data (RunStore drops the steps both carry). After that live
// records go straight into the run's RunStore.

import { RunStore } from "./store.js";
import { getJSON } from "./util.js";

/** Points asked of /metrics per load (the server downsamples a longer history). */
export const METRICS_MAX_POINTS = 2000;
/** Live records held per run while its load runs; older ones are dropped (the next load backfills them). */
export const MAX_HELD = 50000;

/** The metrics URL of run `id`, from the step after `lastStep` (null: from the start). */
export function metricsUrl(id, lastStep) {
  // omit_empty: all-zero NaN/Inf counts and unmeasured update ratios stay off the wire (absent = 0 / null).
  const since = lastStep === null || lastStep === undefined ? "" : `&since_step=${lastStep + 1}`;
  return `/api/runs/${id}/metrics?max_points=${METRICS_MAX_POINTS}&omit_empty=true${since}`;
}

/** One followed run: its RunStore once loaded, and the live data held while a load runs. */
export class RunFeed {
  constructor(runId) {
    this.runId = runId;
    this.store = null;
    this.held = []; // live step records held (null: none held, they go to the store)
    this.heldProbes = [];
    this.seq = 0; // bumps on every load and on close: late answers of an older one are dropped
  }

  /** A (re)load starts: hold live data until merge(). Returns the load's token for current(). */
  begin() {
    this.held = [];
    if (this.heldProbes === null) this.heldProbes = [];
    return ++this.seq;
  }

  /** Whether the load `token` is still the newest one of this feed. */
  current(token) {
    return token === this.seq;
  }

  /** The feed is no longer followed: any load under way is dropped. */
  close() {
    this.seq += 1;
  }

  get holding() {
    return this.held !== null || !this.store;
  }

  /** Live step records: held while loading, else added. Returns how many the store kept. */
  offer(records) {
    if (this.holding) {
      if (this.held === null) this.held = [];
      this.held.push(...records);
      if (this.held.length > MAX_HELD) this.held.splice(0, this.held.length - MAX_HELD);
      return 0;
    }
    let kept = 0;
    for (const r of records) if (this.store.addRecord(r)) kept += 1;
    return kept;
  }

  /** A live probe batch: held while loading, else added. Returns true when the store took it. */
  offerProbe(p) {
    if (this.holding) {
      if (this.heldProbes === null) this.heldProbes = [];
      this.heldProbes.push(p);
      if (this.heldProbes.length > MAX_HELD) this.heldProbes.splice(0, this.heldProbes.length - MAX_HELD);
      return false;
    }
    return this.store.addProbe(p);
  }

  /**
   * Fetch the run's detail (always when `refreshDetail`, else only before the first load), then its
   * metrics since the last step held and `extra(id)`'s promises, together. Returns
   * {detail, metrics, extra} or null when a newer load or close() made this one stale.
   */
  async load(token, { refreshDetail = false, extra = () => [] } = {}) {
    const id = this.runId;
    const detail = refreshDetail || !this.store ? await getJSON(`/api/runs/${id}`) : null;
    if (!this.current(token)) return null;
    const lastStep = this.store ? this.store.lastStep : null;
    const [metrics, ...more] = await Promise.all([getJSON(metricsUrl(id, lastStep)), ...extra(id)]);
    if (!this.current(token)) return null;
    return { detail, metrics, extra: more };
  }

  /** Merge a load: REST data, then the live data held meanwhile. Returns true when the store is new. */
  merge(detail, metrics) {
    const fresh = !this.store;
    if (fresh) this.store = new RunStore(detail);
    this.store.addColumns(metrics);
    for (const r of this.held || []) this.store.addRecord(r);
    for (const p of this.heldProbes || []) this.store.addProbe(p);
    this.held = null;
    this.heldProbes = null;
    return fresh;
  }

  /** A load failed: stop holding (records wait again only while there is no store yet). */
  failed() {
    this.held = null;
  }
}
