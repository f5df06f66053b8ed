"""Keeps the workers of a ``MultiWorkerMirroredStrategy`` run in step with the chief.

Only the chief streams and takes commands. A command reaches its host at a
step boundary, but every worker must use the same clip setting, learning rate
and stop decision at the same step, or their weights diverge (or one waits
forever in the next collective). So every step, the chief's settings ride
along in the all-reduce the hook already does for the gradients (the other
replicas add zeros) and every worker adopts the result before clipping: no
extra round trip, and a change applies on all workers at the same step.

A stop is two-phase: the chief's host raises ``stop`` after step N, the flag
travels with step N + 1, and every worker ends its loop after that step.
A pause needs nothing: the chief blocks on its host, and the other workers
wait in the next all-reduce until it resumes.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from .graph_stats import GradientStats, monitor_variable


def worker_count(strategy: Any) -> int:
    """How many workers (processes) share ``strategy``'s replicas; 1 for any single-process strategy."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    return max(1, int(strategy.num_replicas_in_sync) // max(1, len(strategy.extended.worker_devices)))


def is_distributed(strategy: Any) -> bool:
    """True for a real ``tf.distribute`` strategy, not the default one every Keras model has."""
    if strategy is None:
        return False
    with strategy.scope():
        return bool(tf.distribute.has_strategy())


def first_local_replica(ctx: Any) -> bool:
    """True in the replica that does a step's host-side work: one per process (a strategy traces each replica)."""
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return True
    replica = tf.get_static_value(ctx.replica_id_in_sync_group)
    return replica is None or int(replica) % len(ctx.strategy.extended.worker_devices) == 0


class WorkerSync:
    """Create eagerly, under the strategy's scope, on every worker at the same point (it makes a variable)."""

    def __init__(self, strategy: Any) -> None:
        self.chief = bool(strategy.extended.should_checkpoint)
        # Raised on the chief's host; every worker reads the shared value after each step.
        self.stop = monitor_variable(0.0, tf.float32, "gw_stop")

    def offer(self, ctx: Any, stats: GradientStats, lr: Any) -> tf.Tensor:
        """This replica's share of the settings vector: the chief's first replica gives its own, others zeros."""
        # float64: exact for the clip threshold (a float64 variable) and for a float32 learning rate and flag.
        mine = tf.stack(
            [
                tf.cast(v, tf.float64)
                for v in (stats.clip_mode.read_value(), stats.clip_threshold.read_value(), lr, self.stop.read_value())
            ]
        )
        return tf.where(tf.equal(ctx.replica_id_in_sync_group, 0), mine, tf.zeros_like(mine))

    def follow(self, shared: tf.Tensor, stats: GradientStats, lr_variable: Any) -> None:
        """Adopt the chief's settings (the all-reduced ``offer``) for this step, before clipping.

        ``lr_variable`` is None for a learning-rate schedule: the same on every worker anyway.
        """
        stats.clip_mode.assign(tf.cast(tf.round(shared[0]), tf.int32))
        stats.clip_threshold.assign(tf.cast(shared[1], stats.clip_threshold.dtype))
        if lr_variable is not None:
            lr_variable.assign(tf.cast(shared[2], lr_variable.dtype))
        self.stop.assign(tf.cast(shared[3], self.stop.dtype))
