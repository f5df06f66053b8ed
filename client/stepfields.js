// Generated from gradwatch/stepfields.py by `python -m gradwatch.stepfields`; do not edit.
// tests/test_stepfields.py fails when this file and the table differ.

export const STEP_FIELDS = Object.freeze([
  Object.freeze({"name": "step", "kind": "count", "shape": "scalar", "nullable": false, "column": "step"}),
  Object.freeze({"name": "epoch", "kind": "count", "shape": "scalar", "nullable": false, "column": "epoch"}),
  Object.freeze({"name": "time", "kind": "float", "shape": "scalar", "nullable": false, "column": "time"}),
  Object.freeze({"name": "loss", "kind": "wire_float", "shape": "scalar", "nullable": true, "column": "loss"}),
  Object.freeze({"name": "lr", "kind": "wire_float", "shape": "scalar", "nullable": true, "column": "lr"}),
  Object.freeze({"name": "global_norm", "kind": "wire_float", "shape": "scalar", "nullable": false, "column": "global_norm"}),
  Object.freeze({"name": "clip_mode", "kind": "clip_mode", "shape": "scalar", "nullable": false, "column": "clip_mode"}),
  Object.freeze({"name": "clip_threshold", "kind": "wire_float", "shape": "scalar", "nullable": true, "column": "clip_threshold"}),
  Object.freeze({"name": "clip_scale", "kind": "wire_float", "shape": "scalar", "nullable": false, "column": "clip_scale"}),
  Object.freeze({"name": "clipped", "kind": "bool", "shape": "scalar", "nullable": false, "column": "clipped"}),
  Object.freeze({"name": "clipped_fraction", "kind": "wire_float", "shape": "scalar", "nullable": true, "column": "clipped_fraction"}),
  Object.freeze({"name": "steps_per_sec", "kind": "wire_float", "shape": "scalar", "nullable": true, "column": "steps_per_sec"}),
  Object.freeze({"name": "grad_norm", "kind": "wire_float", "shape": "variable", "nullable": false, "column": "grad_norm"}),
  Object.freeze({"name": "grad_nan", "kind": "count", "shape": "variable", "nullable": false, "column": "nonfinite"}),
  Object.freeze({"name": "grad_inf", "kind": "count", "shape": "variable", "nullable": false, "column": "nonfinite"}),
  Object.freeze({"name": "weight_nonfinite", "kind": "count", "shape": "scalar", "nullable": false, "column": "weight_nonfinite"}),
  Object.freeze({"name": "loss_nonfinite", "kind": "bool", "shape": "scalar", "nullable": false, "column": "loss_nonfinite"}),
  Object.freeze({"name": "bn", "kind": "wire_float", "shape": "bn_layer", "nullable": false, "column": "bn"}),
  Object.freeze({"name": "update_ratio", "kind": "wire_float", "shape": "variable", "nullable": true, "column": "update_ratio"}),
  Object.freeze({"name": "skipped", "kind": "bool", "shape": "scalar", "nullable": false, "column": "skipped"}),
  Object.freeze({"name": "loss_is_mean", "kind": "bool", "shape": "scalar", "nullable": false, "column": "loss_is_mean"}),
]);

export const BN_FIELDS = Object.freeze(["moving_mean_mean", "moving_mean_min", "moving_mean_max", "moving_mean_delta", "moving_variance_mean", "moving_variance_min", "moving_variance_max", "moving_variance_delta"]);
// The metrics response's key for each BN_FIELDS column.
export const BN_SERIES_KEYS = Object.freeze(["moving_mean", "moving_mean_min", "moving_mean_max", "moving_mean_delta", "moving_variance", "moving_variance_min", "moving_variance_max", "moving_variance_delta"]);

const BY_NAME = new Map(STEP_FIELDS.map((f) => [f.name, f]));

/** The field `name` (an Error naming it when the step record has no such field: a typo fails at load). */
export function field(name) {
  const f = BY_NAME.get(name);
  if (!f) throw new Error(`stepfields.js: the step record has no field ${name}`);
  return f;
}
