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
``check`` lists. The recording wrapper adds read-only ops to the plain step; if that changed the
numerics the bitwise comparison would fail loudly, never pass silently.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import math
import os
import re
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf

from gradwatch import GradientMonitor
from gradwatch.protocol import decode_float

SEED = 1234
#: Rows the reference recorder keeps per optimizer: every pattern trains fewer steps than this.
CAPACITY = 256
#: Per-variable norms are stored as float32 by the server, and both sides compute in float32.
NORM_RTOL = 1e-5
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
    slow: bool = False

    def param(self) -> Any:
        marks: list[Any] = []
        if self.xfail:
            raises = Exception if self.crash else AssertionError
            marks.append(pytest.mark.xfail(strict=True, reason=self.xfail, raises=raises))
        if self.slow:
            marks.append(pytest.mark.slow)
        return pytest.param(self, id=self.name, marks=marks)


PATTERNS: list[Pattern] = []


def pattern(source: str, **kwargs: Any) -> Callable[[Callable[[Ctx], Any]], Callable[[Ctx], Any]]:
    """Register ``train`` as a pattern named after the function; ``source``: where it was adapted from."""

    def register(train: Callable[[Ctx], Any]) -> Callable[[Ctx], Any]:
        PATTERNS.append(Pattern(train.__name__, train, source, **kwargs))
        return train

    return register


# ---------------------------------------------------------------------------------------- the reference


class Recorder:
    """Wraps one optimizer's ``apply``: row k holds the gradient norms of its k-th call (plain run only)."""

    def __init__(self, optimizer: Any, offset: int) -> None:
        self.optimizer = optimizer
        self.offset = offset  # run steps trained before this optimizer's first update
        self.paths: list[str] = []
        self.norms: tf.Variable | None = None
        self.count: tf.Variable | None = None
        original = optimizer.apply

        def apply(grads: Sequence[Any], trainable_variables: Sequence[Any] | None = None) -> Any:
            variables = list(trainable_variables) if trainable_variables is not None else None
            self._record(list(grads), variables or list(optimizer._trainable_variables))
            return original(grads, trainable_variables)

        optimizer.apply = apply

    def _record(self, grads: list[Any], variables: list[Any]) -> None:
        present = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if self.norms is None:
            with tf.init_scope():  # ONLY_FIRST_REPLICA: writable from a replica's step under a strategy
                self.paths = [v.path for _, v in present]
                agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
                self.norms = tf.Variable(tf.zeros([CAPACITY, len(present)]), trainable=False, aggregation=agg)
                self.count = tf.Variable(tf.constant(0, tf.int64), trainable=False, aggregation=agg)
        assert self.count is not None
        assert [v.path for _, v in present] == self.paths, "one optimizer, one variable list"
        scale = getattr(self.optimizer, "dynamic_scale", None)  # LossScaleOptimizer: report unscaled norms
        row = []
        for g, _ in present:
            norm = tf.norm(tf.cast(tf.convert_to_tensor(g), tf.float32))
            row.append(norm if scale is None else norm / tf.cast(scale, tf.float32))
        index = tf.minimum(self.count, CAPACITY - 1)
        self.norms.assign(tf.tensor_scatter_nd_update(self.norms, [[index]], [tf.stack(row)]))
        self.count.assign_add(1)

    def rows(self) -> dict[int, dict[str, float]]:
        """Run step -> {variable path: gradient norm}."""
        if self.norms is None or self.count is None:
            return {}
        n = int(self.count.numpy())
        assert n <= CAPACITY, f"{n} updates: raise CAPACITY"
        table = self.norms.numpy()[:n].astype(np.float64)
        return {self.offset + k: dict(zip(self.paths, table[k])) for k in range(n)}


class LossLog(keras.callbacks.Callback):  # type: ignore[misc]
    """The loss ``fit`` hands the callbacks after each batch (in both runs alike): the epoch's running mean.

    With equal batches, step k's own loss follows from two running means: (k+1)·m_k − k·m_(k−1).
    """

    def __init__(self) -> None:
        super().__init__()
        self.means: list[float] = []
        self.own: list[float] = []
        self._k = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._k = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        mean, k = float((logs or {})["loss"]), self._k
        self.own.append(mean if k == 0 else (k + 1) * mean - k * self.means[-1])
        self.means.append(mean)
        self._k += 1

    def matches(self, index: int, reported: float) -> bool:
        """The step's own loss (1e-4: the difference of two float32 means), or the running mean Keras logged."""
        own, mean = self.own[index], self.means[index]
        return math.isclose(reported, own, rel_tol=1e-4) or math.isclose(reported, mean, rel_tol=1e-6)


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


# ---------------------------------------------------------------------------------------- output


def _normalise(line: str) -> str:
    line = re.sub(r"0x[0-9a-fA-F]+", "0x?", line)
    return re.sub(r"\d+", "#", line).strip()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"log {record.name} {record.levelname}: {record.getMessage()}")


@contextlib.contextmanager
def captured(into: list[str]) -> Iterator[None]:
    """Everything printed meanwhile: file descriptors 1 and 2 (C++ logs too), warnings, log records."""
    loggers = [logging.getLogger(), logging.getLogger("tensorflow"), logging.getLogger("absl")]
    handler = _Records()
    for lg in loggers:
        lg.addHandler(handler)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        text = io.StringIO()  # sys.stdout may not be fd 1 (pytest's capture): take both
        try:
            with (
                warnings.catch_warnings(record=True) as caught,
                contextlib.redirect_stdout(text),
                contextlib.redirect_stderr(text),
            ):
                warnings.simplefilter("always")
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for lg in loggers:
                lg.removeHandler(handler)
            tmp.seek(0)
            into.extend(tmp.read().decode(errors="replace").splitlines())
            into.extend(text.getvalue().splitlines())
            into.extend(f"warning {w.category.__name__}: {w.message}" for w in caught)
            into.extend(handler.lines)


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


# ---------------------------------------------------------------------------------------- the checks


class Api:
    def __init__(self, server: Any) -> None:
        self.client = httpx.Client(base_url=server.url, headers=server.headers, timeout=10)

    def get(self, path: str) -> Any:
        r = self.client.get(path)
        r.raise_for_status()
        return r.json()

    def runs_named(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.get("/api/runs") if r["name"] == name]

    def finished_run(self, name: str, last_step: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The runs of that name once the newest is finished at ``last_step`` (bounded wait)."""
        deadline = time.monotonic() + timeout
        runs = self.runs_named(name)
        while time.monotonic() < deadline:
            if runs and runs[0]["status"] == "finished" and runs[0]["step"] == last_step:
                break
            time.sleep(0.1)
            runs = self.runs_named(name)
        return runs


def reference(recorders: list[Recorder]) -> dict[int, dict[str, float]]:
    """Run step -> {path: norm}, merging every optimizer of one run (a GAN updates two per step)."""
    out: dict[int, dict[str, float]] = collections.defaultdict(dict)
    for rec in recorders:
        for step, row in rec.rows().items():
            out[step].update(row)
    return dict(out)


def _compare_state(plain: dict[str, np.ndarray], watched: dict[str, np.ndarray], rtol: float) -> list[str]:
    problems = []
    if sorted(plain) != sorted(watched):
        problems.append(
            f"state variables differ: only plain {sorted(set(plain) - set(watched))}, "
            f"only monitored {sorted(set(watched) - set(plain))}"
        )
    for name in sorted(set(plain) & set(watched)):
        a, b = plain[name], watched[name]
        if rtol == 0.0:
            same = a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
        else:
            same = a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=rtol, equal_nan=True)
        if not same:
            diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.shape == b.shape else "shape"
            problems.append(f"{name}: differs (max abs diff {diff})")
    return problems


def _close(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=NORM_RTOL, abs_tol=1e-12)


def check_run(api: Api, name: str, ref: dict[int, dict[str, float]], losses: LossLog | None) -> list[str]:
    """The problems of one monitored run against its reference (empty: all good)."""
    steps = sorted(ref)
    assert steps == list(range(steps[0], steps[0] + len(steps))), f"the plain run's steps have holes: {steps}"
    runs = api.finished_run(name, steps[-1])
    if len(runs) != 1:
        return [
            f"{len(runs)} runs named {name} (one monitor is one run): "
            f"{[(r['id'], r['status'], r['step']) for r in runs]}"
        ]
    run = runs[0]
    detail = api.get(f"/api/runs/{run['id']}")
    m = api.get(f"/api/runs/{run['id']}/metrics")
    problems = []
    if run["status"] != "finished":
        problems.append(f"run status {run['status']} at step {run['step']} (finished at {steps[-1]} expected)")
    if m["step"] != steps:
        problems.append(f"steps reported {_span(m['step'])} != steps trained {_span(steps)}; gaps {m['gaps']}")
    updated = sorted({p for row in ref.values() for p in row})
    if sorted(detail["variables"]) != updated:
        problems.append(f"variables reported {sorted(detail['variables'])} != updated {updated}")
    bad_norms = []
    for i, step in enumerate(m["step"]):
        want = ref.get(step)
        if want is None:
            continue
        reported = {p: decode_float(s[i]) for p, s in m["grad_norm"].items() if s[i] is not None}
        if sorted(reported) != sorted(want):
            bad_norms.append(f"step {step}: norms of {sorted(reported)} reported, {sorted(want)} updated")
            continue
        for path, value in want.items():
            if not _close(reported[path], value):
                bad_norms.append(f"step {step} {path}: reported {reported[path]:.7g}, reference {value:.7g}")
        global_ref = math.sqrt(sum(v * v for v in want.values()))
        got = decode_float(m["global_norm"][i]) if m["global_norm"][i] is not None else math.nan
        if not _close(got, global_ref):
            bad_norms.append(f"step {step} global norm: reported {got:.7g}, reference {global_ref:.7g}")
    if bad_norms:
        problems.append(f"{len(bad_norms)} norms differ; first: {bad_norms[:4]}")
    if losses is not None:
        got = [decode_float(v) if v is not None else math.nan for v in m["loss"]]
        wrong = [
            (s, g, round(losses.own[s - steps[0]], 5), round(losses.means[s - steps[0]], 5))
            for s, g in zip(m["step"], got)
            if not losses.matches(s - steps[0], g)
        ]
        if wrong:
            problems.append(
                f"the loss of {len(wrong)} steps is neither the step's own nor Keras' running mean "
                f"(step, reported, own, mean): {wrong[:4]}"
            )
    alerts = [a for a in api.get(f"/api/runs/{run['id']}/alerts") if a["severity"] in ("warning", "critical")]
    if alerts:
        shown = [(a["kind"], a["severity"], a["step"], a["message"]) for a in alerts]
        problems.append(f"alerts on a healthy run: {shown}")
    return problems


def _span(steps: list[int]) -> str:
    return f"{len(steps)} steps [{steps[0]}..{steps[-1]}]" if steps else "no steps"


def run_and_check(pat: Pattern, server: Any) -> None:
    plain = train_once(pat, server, monitored=False)
    watched = train_once(pat, server, monitored=True)
    problems = _compare_state(plain.state, watched.state, pat.weights_rtol)
    for i, (a, b) in enumerate(zip(plain.optimizer_paths, watched.optimizer_paths)):
        renamed = [(x, y) for x, y in zip(a, b) if x != y]
        if renamed or len(a) != len(b):
            problems.append(
                f"optimizer {i}'s variables are named differently (without, with the monitor): {renamed[:2]}"
            )
    api = Api(server)
    for key, recorders in plain.ctx.recorders.items():
        log = watched.ctx.loss_logs.get(key)
        problems += [f"[{key}] {p}" for p in check_run(api, watched.ctx.run_name(key), reference(recorders), log)]
    if sorted(plain.ctx.recorders) != sorted(watched.ctx.monitors):
        problems.append(f"runs {sorted(plain.ctx.recorders)} trained, monitors {sorted(watched.ctx.monitors)}")
    extra = collections.Counter(map(_normalise, watched.printed)) - collections.Counter(map(_normalise, plain.printed))
    if extra:
        shown = [line for line in watched.printed if _normalise(line) in extra]
        problems.append(f"printed by the monitored run only: {shown[:8]}")
    assert not problems, f"{pat.name} ({pat.source}):\n  " + "\n  ".join(problems)


# ---------------------------------------------------------------------------------------- tiny data


def digits(n: int = 256, flat: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (no download), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[:n] / 16.0).astype("float32")
    return (x.reshape(len(x), 64) if flat else x[..., None]), d.target[:n].astype("int32")


def token_texts(n: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Short synthetic 'reviews' whose label is whether a positive word occurs; words repeat a lot."""
    rng = np.random.default_rng(seed)
    words = np.array(["good", "bad", "film", "plot", "actor", "great", "dull", "the", "a", "was", "very", "not"])
    texts, labels = [], []
    for _ in range(n):
        chosen = rng.choice(words, size=rng.integers(4, 12))
        texts.append(" ".join(chosen))
        labels.append(int(("good" in chosen) or ("great" in chosen)))
    return np.array(texts), np.array(labels, dtype="int32")
