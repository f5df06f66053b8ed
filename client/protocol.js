// Generated from gradwatch/protocol.py by `python -m gradwatch.pagecontract`; do not edit.
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
export const COMMANDS = Object.freeze(["pause", "resume", "stop", "set_clip", "set_lr"]);
/** Clip modes (ClipMode). */
export const CLIP_MODES = Object.freeze(["global_norm", "norm", "value"]);
/** Alert kinds, in the server's evaluation order (AlertKind). */
export const ALERT_KINDS = Object.freeze(["exploding_gradients", "vanishing_gradients", "nonfinite", "dead_relu", "frozen_batchnorm", "clip_saturated", "diverging"]);
/** What the page calls each alert kind. */
export const ALERT_LABELS = Object.freeze({"exploding_gradients": "Exploding gradients", "vanishing_gradients": "Vanishing gradients", "nonfinite": "NaN / Inf gradients", "dead_relu": "Dead ReLU units", "frozen_batchnorm": "Frozen BatchNorm", "clip_saturated": "Clipping saturated", "diverging": "Heading for divergence"});
/** An alert's lifecycle (AlertView.state). */
export const ALERT_STATES = Object.freeze(["open", "resolved"]);
