// The heatmap's data: the newest columns of the store as log10 gradient norms
// (one row per variable), the NaN/Inf cells to mark and the z range. Grown in
// place as records arrive so a redraw never rebuilds the whole matrix.

import { plotlyText } from "./util.js";
import { pos } from "./chart-base.js";

const MAX_HEAT_CELLS = 1_500_000;
const MAX_NAN_MARKERS = 4000;

function log10Norm(g) {
  const x = pos(g);
  return x === null ? null : Math.log10(x);
}

export class HeatWindow {
  constructor(store) {
    this.store = store;
    this.rebuild();
  }

  /** Columns kept: fewer for models with many variables. */
  get cols() {
    const V = Math.max(1, this.store.V);
    return Math.max(200, Math.min(2000, Math.floor(MAX_HEAT_CELLS / V)));
  }

  /** Records arrived that are not in the window yet. */
  get behind() {
    return this.rendered < this.store.end;
  }

  /** Take in the records that arrived since (rebuilding if the store trimmed past the window). */
  catchUp() {
    if (this.rendered < this.store.base) this.rebuild();
    else this.append();
  }

  rebuild() {
    const s = this.store;
    const from = Math.max(0, s.length - this.cols);
    this.x = s.c.step.slice(from);
    this.z = s.gn.map((row) => row.slice(from).map(log10Norm));
    this.nanX = [];
    this.nanY = [];
    this.zmin = Infinity;
    this.zmax = -Infinity;
    this.scan(0, s.length - from, from);
    this.rendered = s.end; // absolute store index taken in
  }

  /** Track the z range and NaN/Inf cells of columns [colFrom, colTo) (store index = storeFrom + column). */
  scan(colFrom, colTo, storeFrom) {
    const s = this.store;
    for (let v = 0; v < s.V; v++) {
      const row = this.z[v];
      const nf = s.nf[v];
      const gn = s.gn[v];
      for (let j = colFrom; j < colTo; j++) {
        const z = row[j];
        if (z !== null) {
          if (z < this.zmin) this.zmin = z;
          if (z > this.zmax) this.zmax = z;
        }
        const i = storeFrom + j;
        if (nf[i] > 0 || (gn[i] !== null && !Number.isFinite(gn[i]))) {
          this.nanX.push(s.c.step[i]);
          this.nanY.push(plotlyText(s.variables[v]));
        }
      }
    }
    if (this.nanX.length > MAX_NAN_MARKERS) {
      this.nanX.splice(0, this.nanX.length - MAX_NAN_MARKERS);
      this.nanY.splice(0, this.nanY.length - MAX_NAN_MARKERS);
    }
  }

  append() {
    const s = this.store;
    const from = this.rendered - s.base;
    const n = s.length - from;
    if (n <= 0) return;
    const oldLen = this.x.length;
    for (let i = from; i < s.length; i++) this.x.push(s.c.step[i]);
    for (let v = 0; v < s.V; v++) {
      const row = this.z[v];
      const gn = s.gn[v];
      for (let i = from; i < s.length; i++) row.push(log10Norm(gn[i]));
    }
    this.scan(oldLen, oldLen + n, from - oldLen); // only the new columns
    const extra = this.x.length - this.cols;
    if (extra > 0) {
      this.x.splice(0, extra);
      for (const row of this.z) row.splice(0, extra);
      const firstStep = this.x[0];
      let k = 0;
      while (k < this.nanX.length && this.nanX[k] < firstStep) k++;
      if (k) {
        this.nanX.splice(0, k);
        this.nanY.splice(0, k);
      }
    }
    this.rendered = s.end;
  }
}
