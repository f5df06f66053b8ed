// Generated from gradwatch/protocol/ by `python -m gradwatch.pagecontract`; do not edit.
// tests/test_page_contract.py fails when this file and the protocol differ.

/** The version both sides' hello carries. */
export const PROTOCOL_VERSION = 3;
/** Runs one comparison may hold (Compare.run_ids). */
export const MAX_COMPARE = 8;
/** Largest clip threshold a set_clip takes. */
export const MAX_CLIP_THRESHOLD = 1000000000.0;
/** Largest learning rate a set_lr takes. */
export const MAX_LEARNING_RATE = 1000.0;
/** Websocket close codes by name (CloseCode). */
export const CLOSE = Object.freeze({"UNAUTHORIZED": 4401, "FORBIDDEN_ORIGIN": 4403, "PROTOCOL_MISMATCH": 4426, "BAD_MESSAGE": 4400, "TOO_SLOW": 4408, "STORAGE_UNAVAILABLE": 4507, "SERVER_SHUTDOWN": 1001, "POLICY_VIOLATION": 1008, "INTERNAL_ERROR": 1011, "TRY_AGAIN_LATER": 1013});
/** A run's status (RunStatus). */
export const RUN_STATUSES = Object.freeze(["running", "paused", "idle", "interrupted", "finished", "disconnected"]);
/** An alert's severity, lowest first (Severity). */
export const SEVERITIES = Object.freeze(["info", "warning", "critical"]);
/** Control command types (CommandType). */
export const COMMANDS = Object.freeze(["pause", "resume", "stop", "set_clip", "set_lr", "rewind"]);
/** Clip modes (ClipMode). */
export const CLIP_MODES = Object.freeze(["global_norm", "norm", "value"]);
/** Alert kinds, in the server's evaluation order (AlertKind). */
export const ALERT_KINDS = Object.freeze(["exploding_gradients", "vanishing_gradients", "nonfinite", "dead_relu", "frozen_batchnorm", "clip_saturated", "diverging"]);
/** What the page calls each alert kind. */
export const ALERT_LABELS = Object.freeze({"exploding_gradients": "Exploding gradients", "vanishing_gradients": "Vanishing gradients", "nonfinite": "NaN / Inf gradients", "dead_relu": "Dead ReLU units", "frozen_batchnorm": "Frozen BatchNorm", "clip_saturated": "Clipping saturated", "diverging": "Heading for divergence"});
/** An alert's lifecycle (AlertView.state). */
export const ALERT_STATES = Object.freeze(["open", "resolved"]);

// The messages' shapes (docs/protocol.md), as JSDoc types for editors.
/** @typedef {"exploding_gradients"|"vanishing_gradients"|"nonfinite"|"dead_relu"|"frozen_batchnorm"|"clip_saturated"|"diverging"} AlertKind */
/** @typedef {"info"|"warning"|"critical"} Severity */
/** @typedef {"running"|"paused"|"idle"|"interrupted"|"finished"|"disconnected"} RunStatus */
/** @typedef {"running"|"paused"|"idle"|"interrupted"|"finished"} TrainerState */
/** @typedef {"global_norm"|"norm"|"value"} ClipMode */
/** @typedef {"pause"|"resume"|"stop"|"set_clip"|"set_lr"|"rewind"} CommandType */
/** @typedef {"open"|"resolved"} AlertState */
/**
 * @typedef {Object} AlertCounts
 * @property {number} info
 * @property {number} warning
 * @property {number} critical
 */
/**
 * @typedef {Object} AlertMessage
 * @property {"alert"} type
 * @property {number} run_id
 * @property {AlertView} alert
 */
/**
 * @typedef {Object} AlertRuleView
 * @property {boolean} muted
 * @property {Object<string, (number)>} params
 */
/**
 * @typedef {Object} AlertRulesMessage
 * @property {"alert_rules"} type
 * @property {number} run_id
 * @property {Object<string, AlertRuleView>} rules
 */
/**
 * @typedef {Object} AlertUpdate
 * @property {number} step
 * @property {Object<string, (number|"NaN"|"Infinity"|"-Infinity"|string|null)>} evidence
 * @property {string} message
 */
/**
 * @typedef {Object} AlertView
 * @property {number} id
 * @property {number} run_id
 * @property {AlertKind} kind
 * @property {Severity} severity
 * @property {number} step
 * @property {number} last_step
 * @property {(string|null)} layer
 * @property {Array<string>} layers
 * @property {Object<string, (number|"NaN"|"Infinity"|"-Infinity"|string|null)>} evidence
 * @property {string} message
 * @property {Array<string>} remedies
 * @property {number} count
 * @property {number} created_at
 * @property {number} updated_at
 * @property {AlertState} state
 * @property {(number|null)} resolved_step
 * @property {(AlertUpdate|null)} latest
 */
/**
 * @typedef {Object} BrowserHello
 * @property {"hello"} type
 * @property {number} protocol
 */
/**
 * @typedef {Object} ClipView
 * @property {ClipMode} mode
 * @property {(number|"NaN"|"Infinity"|"-Infinity"|null)} threshold
 */
/**
 * @typedef {Object} CommandUpdate
 * @property {"command"} type
 * @property {number} run_id
 * @property {CommandView} command
 */
/**
 * @typedef {Object} CommandView
 * @property {number} id
 * @property {number} run_id
 * @property {CommandType} type
 * @property {(ClipMode|null)} mode
 * @property {(number|null)} threshold
 * @property {(number|null)} lr
 * @property {(string|null)} group
 * @property {(number|null)} step
 * @property {string} origin
 * @property {number} created_at
 * @property {"pending"|"applied"|"rejected"} state
 * @property {(number|null)} applied_step
 * @property {(string|null)} detail
 * @property {number} updated_at
 */
/**
 * @typedef {Object} Compare
 * @property {"compare"} type
 * @property {Array<number>} run_ids
 */
/**
 * @typedef {Object} GapMessage
 * @property {"gap"} type
 * @property {number} run_id
 * @property {number} from_step
 * @property {number} to_step
 * @property {number} dropped
 */
/**
 * @typedef {Object} GapView
 * @property {number} from_step
 * @property {number} to_step
 * @property {number} dropped
 */
/**
 * @typedef {Object} ProbeMessage
 * @property {"probe"} type
 * @property {number} run_id
 * @property {ProbeView} probe
 */
/**
 * @typedef {Object} ProbeView
 * @property {number} step
 * @property {Object<string, (number|"NaN"|"Infinity"|"-Infinity")>} dead_relu
 * @property {Object<string, (number|"NaN"|"Infinity"|"-Infinity")>} bn_gap
 */
/**
 * @typedef {Object} RunMessage
 * @property {"run"} type
 * @property {RunState} run
 */
/**
 * @typedef {Object} RunState
 * @property {number} id
 * @property {string} name
 * @property {RunStatus} status
 * @property {(number|null)} step
 * @property {number} created_at
 * @property {number} updated_at
 * @property {AlertCounts} alerts
 * @property {Array<string>} tags
 * @property {string} note
 * @property {ClipView} clip
 * @property {boolean} paused
 * @property {number} every
 * @property {Object} meta
 * @property {Array<GapView>} gaps
 * @property {(number|null)} lr
 * @property {Array<AlertKind>} pause_on
 * @property {boolean} guard_nonfinite
 * @property {Array<VariableSetView>} variable_sets
 * @property {Array<number>} snapshots
 */
/**
 * @typedef {Object} RunSummary
 * @property {number} id
 * @property {string} name
 * @property {RunStatus} status
 * @property {(number|null)} step
 * @property {number} created_at
 * @property {number} updated_at
 * @property {AlertCounts} alerts
 * @property {Array<string>} tags
 * @property {string} note
 */
/**
 * @typedef {Object} RunsMessage
 * @property {"runs"} type
 * @property {Array<RunSummary>} runs
 */
/**
 * @typedef {Object} ServerHello
 * @property {"hello"} type
 * @property {number} protocol
 */
/**
 * @typedef {Object} StepRecord
 * @property {number} step
 * @property {number} epoch
 * @property {number} time
 * @property {(number|"NaN"|"Infinity"|"-Infinity"|null)} loss
 * @property {(number|"NaN"|"Infinity"|"-Infinity"|null)} lr
 * @property {(number|"NaN"|"Infinity"|"-Infinity")} global_norm
 * @property {ClipMode} clip_mode
 * @property {(number|"NaN"|"Infinity"|"-Infinity"|null)} clip_threshold
 * @property {(number|"NaN"|"Infinity"|"-Infinity")} clip_scale
 * @property {boolean} clipped
 * @property {(number|"NaN"|"Infinity"|"-Infinity"|null)} clipped_fraction
 * @property {(number|"NaN"|"Infinity"|"-Infinity"|null)} steps_per_sec
 * @property {Array<(number|"NaN"|"Infinity"|"-Infinity")>} grad_norm
 * @property {Array<number>} grad_nan
 * @property {Array<number>} grad_inf
 * @property {number} weight_nonfinite
 * @property {boolean} loss_nonfinite
 * @property {Array<Array<(number|"NaN"|"Infinity"|"-Infinity")>>} bn
 * @property {(Array<(number|"NaN"|"Infinity"|"-Infinity")>|null)} update_ratio
 * @property {boolean} skipped
 * @property {boolean} loss_is_mean
 * @property {boolean} micro_step
 * @property {(number|"NaN"|"Infinity"|"-Infinity"|null)} accumulated_norm
 */
/**
 * @typedef {Object} StepsMessage
 * @property {"steps"} type
 * @property {number} run_id
 * @property {Array<StepRecord>} records
 */
/**
 * @typedef {Object} Subscribe
 * @property {"subscribe"} type
 * @property {(number|null)} run_id
 */
/**
 * @typedef {Object} VariableSetView
 * @property {number} from_step
 * @property {Array<number>} variables
 */
