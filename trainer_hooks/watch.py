"""``Watch``: the one-line hook for hand-written ``tf.GradientTape`` loops.

    with monitor.watch(model, optimizer) as watch:
        for x, y in dataset:
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            watch.apply_gradients(grads, model.trainable_variables, loss=loss)
            if watch.stop_requested:
                break

``apply_gradients`` replaces ``optimizer.apply_gradients(zip(grads, vars))``
and runs the same in-graph statistics and live clipping as the callback.
Called eagerly, it runs them in a compiled function of its own; called inside
the user's ``tf.function``, it is traced into it and reaches the host once per
step through ``tf.numpy_function`` (reporting, commands, pause). XLA
(``tf.function(jit_compile=True)``) compiles no host call: there the step only
writes its statistics into the ring, and the host side runs when the loop reads
``watch.stop_requested`` (the loop above, every step) and at the end of the
``with`` block; it reports every step since the last read, up to the ring's
``STATS_RING`` steps, applies commands (acknowledged at the next step) and
blocks there while paused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from .batch_keep import in_xla_context
from .multi_worker import first_local_replica, is_distributed
from .optimizer_hook import build_like_keras

if TYPE_CHECKING:
    from .core import MonitorCore
    from .optimizer_hook import OptimizerHook
    from .session import RunSession


class Watch:
    """Context manager returned by ``GradientMonitor.watch``; set ``watch.epoch`` to label reports.

    The monitor's loop door: it tells the monitor's ``core`` (core.py) where the loop begins, steps and ends.
    """

    def __init__(self, core: MonitorCore, model: Any, optimizer: Any) -> None:
        self.core = core
        self.model = model
        self.optimizer = optimizer
        self.epoch = 0
        self._hook: OptimizerHook | None = None
        self._compiled: dict[tuple[int, ...], Any] = {}
        self._stop = False
        self._steps = 0
        self._xla = False  # traced into an XLA-compiled function: no host call in the step

    @property
    def steps(self) -> int:
        """The optimizer's step count as the host saw it: one per ``apply_gradients``, once per process."""
        return self._steps

    @property
    def stop_requested(self) -> bool:
        """True once ``stop`` was sent from the dashboard: end the loop.

        Inside an XLA-compiled step (``tf.function(jit_compile=True)``) reading it is also when the host
        reports the steps since the last read, applies commands and waits while paused.
        """
        self._catch_up()
        return self._stop

    @property
    def session(self) -> RunSession | None:
        """The monitor's run session, once the first step was reported."""
        return self.core.lifecycle.session

    def __enter__(self) -> Watch:
        if self._hook is None:
            self._hook = self.core.new_hook(self.model, self.optimizer)
            if is_distributed(self._hook.strategy):
                # Variables made now, not in the first traced step: a distribution strategy allows no
                # variable creation inside a replica's step. (Otherwise the first step's own variables
                # decide what is watched, so a loop that trains a subset watches just that subset.)
                self._hook.prepare_if_built(self.model)
        hook = self._hook
        hook.take_over_clipping()  # until __exit__: the monitor clips (also in a step traced earlier)
        self._stop = False
        # Entered again: the run's step numbers go on; counted on the host from here on.
        self._steps = self.core.begin(hook, self.model, self.optimizer, on_leave=hook.uninstall)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        """Back to idle (the next ``with`` continues the run), or interrupted if the block raised."""
        self._catch_up()  # under XLA: the steps since stop_requested was last read
        if exc_type is None:
            self.core.lifecycle.end()
        else:
            self.core.lifecycle.interrupt()

    def apply_gradients(
        self, grads: Sequence[Any], variables: Sequence[Any], loss: Any = None, inputs: Any = None
    ) -> None:
        """Clip with the live threshold, record statistics, update the weights, then report.

        ``inputs=(x, y)`` (optional) lets a non-finite step be traced back to the
        batch's features, labels or first layer.
        """
        if self._hook is None:
            raise RuntimeError("use `with monitor.watch(model, optimizer) as watch:` before apply_gradients")
        grads, variables = list(grads), list(variables)
        if not self.optimizer.built:
            build_like_keras(self.optimizer, variables)
        if tf.executing_eagerly():
            key = tuple(id(v) for v in variables)
            step = self._compiled.get(key)
            if step is None:
                step = self._compiled[key] = tf.function(lambda g, l_, i_: self._update(g, variables, l_, i_))
            step(grads, loss, inputs)
            self._after()
        else:
            self._update(grads, variables, loss, inputs)
            stats = self._hook.stats
            assert stats is not None  # built by the update just traced
            if in_xla_context():
                # XLA compiles no host call: the host catches up when stop_requested is read, and at exit.
                self._xla = True
                return
            if not first_local_replica(tf.distribute.get_replica_context()):
                return  # one host call per step and process, not one per replica
            # The row as an input orders this host call after the step's writes; reads of the
            # BatchNorm statistics order it after their updates too (the host may sample them).
            moving = [tf.convert_to_tensor(v) for v in stats.bn.reader.variables]
            last = tf.math.floormod(stats.step.read_value() - 1, stats.ring)
            host_inputs = [tf.gather(stats.buffer.read_value(), last)[None]]
            if self._hook.sync is not None:
                host_inputs.append(self._hook.sync.stop.read_value())  # the shared flag, after this step adopted it
            with tf.control_dependencies(moving):
                tf.numpy_function(self._after_in_step, host_inputs, [], stateful=True)

    def _update(self, grads: list[Any], variables: list[Any], loss: Any, inputs: Any) -> None:
        assert self._hook is not None
        self._hook.update(grads, variables, lambda g, v: self.optimizer.apply(g, v), loss=loss, inputs=inputs)

    def _catch_up(self) -> None:
        """Under XLA: the host side of the steps run since the host last looked (the ring keeps their rows)."""
        stats = self._hook.stats if self._hook is not None else None
        if not self._xla or stats is None:
            return
        next_step = int(stats.step.numpy())  # waits for the step in flight
        if next_step > self._steps:
            self._steps = next_step - 1  # _after counts the last one
            self._after(stats.read())

    def _after_in_step(self, rows: Any, shared_stop: Any = None) -> None:
        """The host call inside the user's compiled step: no snapshot nor rewind there."""
        self._after(rows, shared_stop, between_steps=False)

    def _after(self, rows: Any = None, shared_stop: Any = None, between_steps: bool = True) -> None:
        """Host side of one step: never raises into the loop (see GradientMonitor)."""
        assert self._hook is not None
        self._steps += 1
        sync = self._hook.sync
        if sync is not None:  # several workers: all stop at the step the chief's flag travelled with
            self._stop = bool(sync.stop.numpy() if shared_stop is None else shared_stop)
            if not sync.chief:
                return  # only the chief streams and takes commands
        stop = self.core.lifecycle.step(self._steps, self.epoch, rows=rows, between_steps=between_steps)
        if sync is None:
            self._stop = stop
        elif stop:
            sync.stop.assign(1.0)  # the next step carries it to every worker
