"""The differential harness: every pattern trains twice, without and with gradwatch, and is compared.

A pattern is a function ``train(ctx) -> model(s)`` registered with ``@pattern(...)``. It builds its
model and data, passes its optimizers through ``ctx.optimizer(...)``, its callbacks through
``ctx.callbacks()`` and writes its hand-written loop against ``ctx.watch(model, optimizer)``.

* The **plain run** gets no monitor: ``ctx.callbacks()`` is empty and ``ctx.watch`` is a stand-in
  that calls ``optimizer.apply_gradients(zip(grads, variables))``, the user's own line. It also
  records the reference: ``ctx.optimizer`` wraps the optimizer's ``apply`` (the one door both
  ``fit`` and ``apply_gradients`` go through) so that, inside the compiled step, the norm of every
  gradient it receives (``tf.norm(tf.convert_to_tensor(g))``, unscaled by a ``LossScaleOptimizer``'s
  dynamic scale) is written into a variable of the harness. No gradwatch code is involved.
* The **monitored run** gets a ``GradientMonitor`` per run key, streaming to a real server, and
  ``ctx.watch`` is ``monitor.watch(...)``. Nothing else differs.

Both runs start from ``keras.backend.clear_session()`` (same layer names, hence variable paths) and
``keras.utils.set_random_seed(SEED)`` under op determinism. ``run_and_check`` then asserts what
``checks.check_run`` lists. The recording wrapper adds read-only ops to the plain step; if that changed the
numerics the bitwise comparison would fail loudly, never pass silently.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pytest
from checks import Api, check_run, compare_state
from output import captured, normalise
from reference import LossLog, Recorder, reference
from tinydata import digits, token_texts

from gradwatch import GradientMonitor

__all__ = ["MAIN", "SEED", "Ctx", "Pattern", "digits", "pattern", "run_and_check", "token_texts"]

SEED = 1234
MAIN = "main"


# ---------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Pattern:
    name: str
    train: Callable[[Ctx], Any]
    source: str
    xfail: str | None = None  # "issue 16 item N: ..." while a known bug makes it fail
    crash: bool = False  # that bug raises inside training (else: a check of the harness fails)
    monitor_kwargs: dict[str, Any] = field(default_factory=dict)
    weights_rtol: float = 0.0  # 0: bitwise; else a bound justified where the pattern declares it
    loss_per_step: bool = False  # also compare each step's reported loss with the loss fit logged for it
    #: Text of warnings the monitor documents for this configuration: each may be printed once, nothing else.
    expected_output: tuple[str, ...] = ()

    def param(self) -> Any:
        marks: list[Any] = []
        if self.xfail:
            raises = Exception if self.crash else AssertionError
            marks.append(pytest.mark.xfail(strict=True, reason=self.xfail, raises=raises))
        return pytest.param(self, id=self.name, marks=marks)


PATTERNS: list[Pattern] = []


def pattern(source: str, **kwargs: Any) -> Callable[[Callable[[Ctx], Any]], Callable[[Ctx], Any]]:
    """Register ``train`` as a pattern named after the function; ``source``: where it was adapted from."""

    def register(train: Callable[[Ctx], Any]) -> Callable[[Ctx], Any]:
        PATTERNS.append(Pattern(train.__name__, train, source, **kwargs))
        return train

    return register


class PlainWatch:
    """The user's own loop body where ``monitor.watch`` would be: ``optimizer.apply_gradients``."""

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer
        self.stop_requested = False

    def __enter__(self) -> PlainWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def apply_gradients(
        self, grads: Sequence[Any], variables: Sequence[Any], loss: Any = None, inputs: Any = None
    ) -> None:
        self.optimizer.apply_gradients(zip(grads, variables))


# ---------------------------------------------------------------------------------------- the context


class Ctx:
    """What a pattern trains with; ``monitored`` tells the two runs apart (patterns never need to)."""

    def __init__(self, pattern: Pattern, server: Any, monitored: bool) -> None:
        self.pattern = pattern
        self.server = server
        self.monitored = monitored
        self.tag = uuid.uuid4().hex[:8]
        self.optimizers: list[Any] = []
        self.recorders: dict[str, list[Recorder]] = collections.defaultdict(list)
        self.monitors: dict[str, GradientMonitor] = {}
        self.loss_logs: dict[str, LossLog] = {}

    def run_name(self, key: str) -> str:
        return f"compat-{self.pattern.name}-{key}-{self.tag}"

    def optimizer(self, optimizer: Any, key: str = MAIN) -> Any:
        """Declare an optimizer the pattern trains with (its state is compared; its gradients are the reference)."""
        self.optimizers.append(optimizer)
        if not self.monitored:
            # A run's steps go on across optimizers (recompiled), from a restored optimizer's step count.
            done = max((r.offset + int(r.count.numpy()) for r in self.recorders[key] if r.count is not None), default=0)
            self.recorders[key].append(Recorder(optimizer, offset=max(done, int(optimizer.iterations.numpy()))))
        return optimizer

    def monitor(self, key: str = MAIN) -> GradientMonitor | None:
        """The run's monitor (one per key, created once): ``None`` in the plain run."""
        if not self.monitored:
            return None
        if key not in self.monitors:
            self.monitors[key] = GradientMonitor(
                server=self.server.url,
                token=self.server.token,
                run_name=self.run_name(key),
                flush_timeout=10,
                **self.pattern.monitor_kwargs,
            )
        return self.monitors[key]

    def callbacks(self, *others: Any, key: str = MAIN) -> list[Any]:
        """The pattern's own callbacks, plus the monitor in the monitored run."""
        mon = self.monitor(key)
        if self.pattern.loss_per_step:
            others = (*others, self.loss_logs.setdefault(key, LossLog()))
        return [*others, *([mon] if mon is not None else [])]

    def watch(self, model: Any, optimizer: Any, key: str = MAIN) -> Any:
        mon = self.monitor(key)
        return mon.watch(model, optimizer) if mon is not None else PlainWatch(optimizer)


# ---------------------------------------------------------------------------------------- one run


@dataclass
class Outcome:
    ctx: Ctx
    state: dict[str, np.ndarray]
    optimizer_paths: list[list[str]]
    printed: list[str]


def _state(models: Any, optimizers: list[Any]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for i, model in enumerate(models if isinstance(models, (list, tuple)) else [models]):
        for v in model.weights:
            out[f"model{i}:{v.path}"] = np.asarray(v.numpy())
    for i, opt in enumerate(optimizers):
        for j, v in enumerate(opt.variables):  # by position: a path that changed is reported apart
            out[f"optimizer{i}:{j}"] = np.asarray(v.numpy())
    return out


def _optimizer_paths(optimizers: list[Any]) -> list[list[str]]:
    return [[v.path for v in opt.variables] for opt in optimizers]


def train_once(pat: Pattern, server: Any, monitored: bool) -> Outcome:
    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    ctx = Ctx(pat, server, monitored)
    printed: list[str] = []
    try:
        with captured(printed):
            models = pat.train(ctx)
            for mon in ctx.monitors.values():
                mon.close()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return Outcome(ctx, _state(models, ctx.optimizers), _optimizer_paths(ctx.optimizers), printed)


def run_and_check(pat: Pattern, server: Any) -> None:
    plain = train_once(pat, server, monitored=False)
    watched = train_once(pat, server, monitored=True)
    problems = compare_state(plain.state, watched.state, pat.weights_rtol)
    for i, (a, b) in enumerate(zip(plain.optimizer_paths, watched.optimizer_paths)):
        renamed = [(x, y) for x, y in zip(a, b) if x != y]
        if renamed or len(a) != len(b):
            problems.append(
                f"optimizer {i}'s variables are named differently (without, with the monitor): {renamed[:2]}"
            )
    with Api(server) as api:
        for key, recorders in plain.ctx.recorders.items():
            log = watched.ctx.loss_logs.get(key)
            problems += [f"[{key}] {p}" for p in check_run(api, watched.ctx.run_name(key), reference(recorders), log)]
    if sorted(plain.ctx.recorders) != sorted(watched.ctx.monitors):
        problems.append(f"runs {sorted(plain.ctx.recorders)} trained, monitors {sorted(watched.ctx.monitors)}")
    extra = collections.Counter(map(normalise, watched.printed)) - collections.Counter(map(normalise, plain.printed))
    for text in pat.expected_output:
        announced = [line for line in extra if text in line]
        if not announced:
            problems.append(f"the monitor did not say {text!r}")
        for line in announced[:1]:
            extra[line] -= 1
        extra = +extra  # drop the lines counted out
    if extra:
        shown = [line for line in watched.printed if normalise(line) in extra]
        problems.append(f"printed by the monitored run only: {shown[:8]}")
    assert not problems, f"{pat.name} ({pat.source}):\n  " + "\n  ".join(problems)
