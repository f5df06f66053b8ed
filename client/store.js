// Columnar store of one run's step statistics, fed by REST metrics (columns)
// and live websocket StepRecords. Steps only ever move forward: a record whose
// step is not after the last one kept is a duplicate (REST backfill and live
// stream overlap by design) and is dropped.

import { BN_FIELDS, BN_SERIES_KEYS, STEP_FIELDS, field } from "./stepfields.js";
import { num } from "./util.js";

// Names come from the step fields (stepfields.js, generated from gradwatch/stepfields.py):
// field() throws at load on a name the record does not have.
const BN_MEAN = BN_FIELDS.indexOf("moving_mean_mean");
const BN_VAR = BN_FIELDS.indexOf("moving_variance_mean");
const BN_MEAN_KEY = BN_SERIES_KEYS[BN_MEAN];
const BN_VAR_KEY = BN_SERIES_KEYS[BN_VAR];
// The scalars kept per point: every scalar number of the step record (stepfields.js), one
// column each, under the short name the charts use where they have one; `bool` ones are kept as
// 0/1 flags. A scalar field added to gradwatch/stepfields.py becomes a column under its own name.
const SHORT = {
  global_norm: "gnorm", clip_threshold: "thr", clip_scale: "scale", clipped_fraction: "clipfrac",
  steps_per_sec: "sps", weight_nonfinite: "wnf", loss_nonfinite: "lnf", loss_is_mean: "lossMean",
  micro_step: "micro", accumulated_norm: "accnorm",
};
for (const name of Object.keys(SHORT)) field(name); // a renamed field that no longer exists fails at load
const NOT_SCALARS = new Set(["step", "clip_mode"]); // the axis itself; a string (RunDetail.clip has it)
/** [store key, step field] of each scalar kept. */
export const SCALARS = STEP_FIELDS.filter((f) => f.shape === "scalar" && !NOT_SCALARS.has(f.name))
  .map((f) => [SHORT[f.name] || f.name, f]);
/** Columns the store derives from the scalars. */
const DERIVED = ["step", "clipShare", "nfTotal"];
const GRAD_NORM = field("grad_norm");
const GRAD_NAN = field("grad_nan");
const GRAD_INF = field("grad_inf");
const UPDATE_RATIO = field("update_ratio");
const BN = field("bn");

/** A point's scalars from `get(metrics key)`: numbers, null when not reported; counts and flags 0 when absent. */
function scalars(get) {
  const f = {};
  for (const [key, fld] of SCALARS) {
    const x = num(get(fld.column));
    f[key] = fld.kind === "bool" ? (x ? 1 : 0) : fld.kind === "count" ? x || 0 : x;
  }
  return f;
}

const CLIP_SHARE_WINDOW = 50;
const MAX_CELLS = 3_000_000; // bound on kept per-variable numbers (variables x steps)

/**
 * The optimizer groups of a run whose train step updates with several optimizers (a GAN's):
 * meta.optimizer_groups is JSON {group: number of variables}, groups contiguous in variable
 * order (docs/protocol.md). Returns [{name, start, end}] (rows start..end-1), or [] for one optimizer.
 */
export function optimizerGroups(meta, nVars) {
  let counts;
  try {
    counts = JSON.parse((meta && meta.optimizer_groups) || "null");
  } catch {
    return [];
  }
  if (!counts || typeof counts !== "object") return [];
  const out = [];
  let start = 0;
  for (const [name, n] of Object.entries(counts)) {
    if (!Number.isInteger(n) || n < 0) return [];
    out.push({ name: String(name), start, end: start + n });
    start += n;
  }
  return start === nVars && out.length > 1 ? out : [];
}

export class RunStore {
  constructor(detail) {
    this.runId = detail.id;
    this.variables = (detail.variables || []).map(String);
    this.bnLayers = (detail.bn_layers || []).map(String);
    this.reluLayers = (detail.relu_layers || []).map(String); // what the probe measures (dead units)
    this.V = this.variables.length;
    // Where the watched variables changed within the run: [{from_step, variables: [indices]}], step order.
    this.variableSets = Array.isArray(detail.variable_sets) ? detail.variable_sets : [];
    this._positionsOf = new Map(); // a variable set -> each variable's position in its records (-1: not watched)
    this.groups = optimizerGroups(detail.meta, this.V);
    this.L = this.bnLayers.length;
    // Keep at most this many steps in memory (charts show a window of it).
    this.cap = Math.max(2000, Math.min(20000, Math.floor(MAX_CELLS / Math.max(1, this.V))));
    this.c = Object.fromEntries([...DERIVED, ...SCALARS.map(([key]) => key)].map((key) => [key, []]));
    this.ur = this.variables.map(() => []); // update-to-weight ratio per variable (null: not measured)
    this.urSeen = false; // any update ratio received
    this.skippedCount = 0;
    this.accumulating = false; // any update step of gradient accumulation received
    // Probe batches (every N steps, own step axis): {step: [], dead_relu: {layer: []}, bn_gap: {layer: []}}
    this.probe = { step: [], dead_relu: new Map(), bn_gap: new Map() };
    this.probeVersion = 0;
    this.gn = this.variables.map(() => []);
    this.nf = this.variables.map(() => []);
    this.bnMean = this.bnLayers.map(() => []);
    this.bnVar = this.bnLayers.map(() => []);
    this.base = 0; // points trimmed from the front
    this.received = 0; // points accepted, ever
    this.duplicates = 0; // points dropped as already seen
    this.lastStep = null;
    this.clippedCount = 0;
    this.nfByVar = new Float64Array(this.V); // cumulative non-finite gradient elements per variable
    this.nfSteps = new Float64Array(this.V); // steps with any non-finite element, per variable
    this.nfLast = new Array(this.V).fill(null); // last such step, per variable
    this.nfVersion = 0; // bumps whenever nfByVar changes
    this.firstNonfinite = null; // {step, kind}
    this.lossNonfinite = 0;
    this.lossMeanSteps = 0; // steps whose loss is Keras' running mean, not the step's own
    this.weightNonfinite = 0;
    this.gaps = [];
    this.rewinds = []; // the steps at which an applied rewind took effect (controls.rewindSteps)
    this._recentClipped = [];
  }

  get length() {
    return this.c.step.length;
  }

  /** Absolute index one past the newest point. */
  get end() {
    return this.base + this.c.step.length;
  }

  _pushCommon(step, f) {
    const c = this.c;
    c.step.push(step);
    for (const [key] of SCALARS) c[key].push(f[key]);
    this.clippedCount += f.clipped;
    this._recentClipped.push(f.clipped);
    if (this._recentClipped.length > CLIP_SHARE_WINDOW) this._recentClipped.shift();
    c.clipShare.push(this._recentClipped.reduce((a, b) => a + b, 0) / this._recentClipped.length);
    if (f.skipped) this.skippedCount += 1;
    // Gradient accumulation: micro-steps only accumulate; an update step's averaged gradient is clipped.
    if (f.accnorm !== null) this.accumulating = true;
    if (f.wnf > 0) this.weightNonfinite += 1;
    if (f.lnf) this.lossNonfinite += 1;
    if (f.lossMean) this.lossMeanSteps += 1;
    this.lastStep = step;
    this.received += 1;
  }

  _noteNonfinite(step, total, f) {
    if (this.firstNonfinite === null && (total > 0 || f.lnf || f.wnf > 0 || !Number.isFinite(f.gnorm))) {
      this.firstNonfinite = { step };
    }
  }

  /** Add one live StepRecord (wire form). Returns true when kept. */
  addRecord(r) {
    const step = Number(r.step);
    if (!Number.isFinite(step)) return false;
    if (this.lastStep !== null && step <= this.lastStep) {
      this.duplicates += 1;
      return false;
    }
    const f = scalars((name) => r[name]);
    const ur = Array.isArray(r[UPDATE_RATIO.name]) ? r[UPDATE_RATIO.name] : null;
    const gn = r[GRAD_NORM.name] || [];
    const nan = r[GRAD_NAN.name] || [];
    const inf = r[GRAD_INF.name] || [];
    const bn = r[BN.name] || [];
    const bnAt = (l, k) => (bn[l] && bn[l].length > k ? num(bn[l][k]) : null);
    const pos = this._positions(step);
    const p = (v) => (pos === null ? v : pos[v]); // -1: not watched on this step, no value
    this._pushPoint(step, f, {
      ur: (v) => (ur && p(v) >= 0 && p(v) < ur.length ? num(ur[p(v)]) : null),
      gn: (v) => (p(v) >= 0 && p(v) < gn.length ? num(gn[p(v)]) : null),
      nf: (v) => (p(v) >= 0 ? (Number(nan[p(v)]) || 0) + (Number(inf[p(v)]) || 0) : 0),
      bnMean: (l) => bnAt(l, BN_MEAN),
      bnVar: (l) => bnAt(l, BN_VAR),
    });
    this._trim();
    return true;
  }

  /** Each variable's position in the vectors of a record of `step` (-1: not watched), or null: the run's order. */
  _positions(step) {
    let active = null;
    for (const set of this.variableSets) {
      if (Number(set.from_step) > step) break;
      active = set.variables;
    }
    if (!Array.isArray(active)) return null;
    let pos = this._positionsOf.get(active);
    if (pos === undefined) {
      pos = new Array(this.V).fill(-1);
      active.forEach((v, i) => {
        if (v >= 0 && v < this.V) pos[v] = i;
      });
      if (active.length === this.V && pos.every((q, v) => q === v)) pos = null;
      this._positionsOf.set(active, pos);
    }
    return pos;
  }

  /**
   * Add a REST metrics response (columns). Points whose step is after the last
   * kept step are taken; equal steps inside one response are kept (a
   * downsampled bucket may report its min and max at one step).
   * Returns the number of points kept.
   */
  addColumns(m) {
    const steps = m.step || [];
    const floor = this.lastStep;
    const col = (name, i) => {
      const a = m[name];
      return a && i < a.length ? a[i] : null;
    };
    const byVar = (fld, names) => names.map((name) => (m[fld.column] && m[fld.column][name]) || null);
    const gnCols = byVar(GRAD_NORM, this.variables);
    const nfCols = byVar(GRAD_NAN, this.variables); // grad_nan + grad_inf, summed as stored
    const bnCols = byVar(BN, this.bnLayers);
    const urCols = byVar(UPDATE_RATIO, this.variables);
    const at = (a, j) => (a && j < a.length ? num(a[j]) : null);
    let kept = 0;
    for (let i = 0; i < steps.length; i++) {
      const step = Number(steps[i]);
      if (!Number.isFinite(step)) continue;
      if (floor !== null && step <= floor) {
        this.duplicates += 1;
        continue;
      }
      if (this.lastStep !== null && step < this.lastStep) continue; // out of order: never happens with a sane server
      const f = scalars((name) => col(name, i));
      this._pushPoint(step, f, {
        ur: (v) => at(urCols[v], i),
        gn: (v) => at(gnCols[v], i),
        nf: (v) => Number(at(nfCols[v], i)) || 0,
        bnMean: (l) => at(bnCols[l] && bnCols[l][BN_MEAN_KEY], i),
        bnVar: (l) => at(bnCols[l] && bnCols[l][BN_VAR_KEY], i),
      });
      kept += 1;
    }
    if (Array.isArray(m.gaps)) this.mergeGaps(m.gaps);
    if (m.probe && Array.isArray(m.probe.step)) this.addProbeColumns(m.probe);
    this._trim();
    return kept;
  }

  /**
   * Append one step: the scalars `f`, and per variable / BN layer the values
   * `get` reads (a live record and a REST column share this one path).
   */
  _pushPoint(step, f, get) {
    let total = 0;
    let changed = false;
    for (let v = 0; v < this.V; v++) {
      const x = get.ur(v);
      if (x !== null) this.urSeen = true;
      this.ur[v].push(x);
      this.gn[v].push(get.gn(v));
      const k = get.nf(v);
      this.nf[v].push(k);
      if (k > 0) {
        this.nfByVar[v] += k;
        this.nfSteps[v] += 1;
        this.nfLast[v] = step;
        changed = true;
      }
      total += k;
    }
    for (let l = 0; l < this.L; l++) {
      this.bnMean[l].push(get.bnMean(l));
      this.bnVar[l].push(get.bnVar(l));
    }
    this.c.nfTotal.push(total);
    if (changed) this.nfVersion += 1;
    this._noteNonfinite(step, total, f);
    this._pushCommon(step, f);
  }

  mergeGaps(gaps) {
    for (const g of gaps) {
      const key = `${g.from_step}-${g.to_step}`;
      if (!this.gaps.some((x) => `${x.from_step}-${x.to_step}` === key)) {
        this.gaps.push({ from_step: Number(g.from_step), to_step: Number(g.to_step), dropped: Number(g.dropped) });
      }
    }
  }

  _trim() {
    const extra = this.c.step.length - this.cap;
    if (extra < Math.max(256, this.cap / 10)) return; // trim in chunks, not per point
    for (const a of Object.values(this.c)) a.splice(0, extra);
    for (const a of this.gn) a.splice(0, extra);
    for (const a of this.nf) a.splice(0, extra);
    for (const a of this.bnMean) a.splice(0, extra);
    for (const a of this.bnVar) a.splice(0, extra);
    for (const a of this.ur) a.splice(0, extra);
    this.base += extra;
  }

  // ------------------------------------------------------------------ probe batches

  _probeRow(kind, layer) {
    const m = this.probe[kind];
    let row = m.get(layer);
    if (!row) {
      row = this.probe.step.map(() => null); // a layer first seen now: nothing before
      m.set(layer, row);
    }
    return row;
  }

  /** Add one probe ({step, dead_relu: {layer: x}, bn_gap: {layer: x}}); merged by step. Returns true when new. */
  addProbe(p) {
    if (!p) return false;
    const step = Number(p.step);
    if (!Number.isFinite(step)) return false;
    const steps = this.probe.step;
    if (steps.length && step <= steps[steps.length - 1]) {
      if (steps.includes(step)) return false; // duplicate (REST and live overlap)
      // out of order: rare; rebuild by inserting at its place
      const at = steps.findIndex((s) => s > step);
      steps.splice(at, 0, step);
      for (const kind of ["dead_relu", "bn_gap"]) {
        for (const row of this.probe[kind].values()) row.splice(at, 0, null);
        for (const [layer, x] of Object.entries(p[kind] || {})) this._probeRow(kind, String(layer))[at] = num(x);
      }
    } else {
      steps.push(step);
      for (const kind of ["dead_relu", "bn_gap"]) {
        for (const row of this.probe[kind].values()) row.push(null);
        for (const [layer, x] of Object.entries(p[kind] || {})) {
          const row = this._probeRow(kind, String(layer));
          row[row.length - 1] = num(x);
        }
      }
    }
    if (steps.length > 20000) {
      const extra = steps.length - 20000;
      steps.splice(0, extra);
      for (const kind of ["dead_relu", "bn_gap"]) for (const row of this.probe[kind].values()) row.splice(0, extra);
    }
    this.probeVersion += 1;
    return true;
  }

  /** REST form: {step: [...], dead_relu: {layer: [...]}, bn_gap: {layer: [...]}}. */
  addProbeColumns(pc) {
    const steps = pc.step || [];
    let kept = 0;
    for (let i = 0; i < steps.length; i++) {
      const one = { step: steps[i], dead_relu: {}, bn_gap: {} };
      for (const kind of ["dead_relu", "bn_gap"]) {
        for (const [layer, col] of Object.entries(pc[kind] || {})) {
          if (Array.isArray(col) && i < col.length && col[i] !== null) one[kind][layer] = col[i];
        }
      }
      if (this.addProbe(one)) kept += 1;
    }
    return kept;
  }

  get hasProbe() {
    return this.probe.step.length > 0;
  }

  /** Variables with any non-finite gradient element so far, in model order. */
  nonfiniteVariables() {
    const out = [];
    for (let v = 0; v < this.V; v++) if (this.nfByVar[v] > 0) {
        out.push({ name: this.variables[v], count: this.nfByVar[v], steps: this.nfSteps[v], last: this.nfLast[v] });
      }
    return out;
  }
}
