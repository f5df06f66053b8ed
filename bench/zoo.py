"""The diagnosis zoo: pathological and healthy training runs drawn at random from a seeded RNG.

Nothing is hand-picked: ``draw_zoo(seed)`` draws, for every run, the recipe within its kind and then the
architecture, width, depth, optimizer, learning rate, batch size, API, onset step and speed of onset.
The recipes provoke the six alert kinds the way the seeds (/work/shared/seeds/) describe them happening,
in shapes of their own: a learning rate that runs away or jumps, large initial weights, sigmoid/tanh
towers, NaN/Inf in features or labels, an exponential layer that overflows, ReLU layers whose bias pushes
every unit below zero, BatchNorm called without ``training=True`` or with momentum 1, clip thresholds far
below the gradients. Healthy runs carry the hard negatives (mixed precision, warm-up, ragged last
batches, attention and recurrent layers, small batches, high-but-stable learning rates, frozen layers,
BatchNorm frozen on purpose, custom ``train_step`` and ``watch()`` loops, per-variable clipping).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from gradwatch.protocol import ALERT_KINDS

from .zoo_models import ModelSpec, digits, optimizer, runaway_schedule, warmup_schedule
from .zoo_train import TrainSpec, dead_share, labels, train

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
#: A learning rate each optimizer trains these models with, comfortably.
NOMINAL_LR = {"sgd": 0.05, "momentum": 0.01, "adam": 1e-3, "rmsprop": 1e-3}
#: Kinds that may honestly accompany a run's true kind (a run that explodes also ends in NaN).
ALSO: dict[str, tuple[str, ...]] = {
    # large updates kill ReLUs (and saturate LSTM gates); a runaway learning rate is seen coming (diverging)
    "exploding_gradients": ("nonfinite", "dead_relu", "diverging"),
    "vanishing_gradients": (),
    "nonfinite": (),
    "dead_relu": (),
    "frozen_batchnorm": ("exploding_gradients", "nonfinite"),
    "clip_saturated": (),
}


@dataclass(frozen=True)
class Run:
    name: str
    kind: str  # the true kind, or "healthy"
    recipe: str
    model: ModelSpec
    train: TrainSpec
    opt: str
    lr: float
    n: int  # examples
    schedule: dict[str, float] = field(default_factory=dict)  # runaway: onset, growth, jump; warmup: steps
    clip: dict[str, float] = field(default_factory=dict)
    inject: dict[str, float] = field(default_factory=dict)  # what / at which step
    raw_inputs: bool = False
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = {k: v if isinstance(v, (int, float, str, bool)) else _describe(v) for k, v in d["model"].items()}
        return d


def _describe(initializer: Any) -> str:
    config = getattr(initializer, "get_config", dict)()
    args = ", ".join(f"{k}={v:.3g}" for k, v in config.items() if isinstance(v, float))
    return f"{type(initializer).__name__}({args})"


class Draw:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def pick(self, options: Any) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def logu(self, low: float, high: float) -> float:
        return float(math.exp(self.rng.uniform(math.log(low), math.log(high))))

    def int(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1))


# --------------------------------------------------------------------------- pathological recipes


def _exploding(d: Draw) -> dict[str, Any]:
    recipe = d.pick(("lr_runaway", "sgd_runaway", "sgd_runaway", "lr_jump", "big_init"))
    arch = (
        d.pick(("mlp", "cnn", "rescnn", "gru", "lstm", "transformer"))
        if recipe != "big_init"
        else d.pick(("mlp", "cnn"))
    )
    opt = d.pick(OPTIMIZERS)
    api = d.pick(("fit", "custom", "watch", "mixed"))
    model = ModelSpec(arch, d.pick((32, 64, 128)) if arch in ("mlp",) else d.pick((16, 32)), d.int(2, 4))
    lr = NOMINAL_LR[opt] * d.logu(0.5, 2)
    if recipe == "big_init":
        model = replace(model, kernel_init=_normal(d.logu(0.5, 2.0)), depth=d.int(3, 6))
        return dict(
            recipe=recipe,
            model=model,
            opt=d.pick(("sgd", "momentum")),
            lr=d.logu(0.05, 0.3),
            api=api,
            steps=60,
            batch=d.pick((16, 32, 64)),
        )
    onset = d.int(10, 150)
    if recipe == "sgd_runaway":  # plain or momentum SGD: the gradients themselves run away, at any pace
        opt = d.pick(("sgd", "momentum"))
        lr = NOMINAL_LR[opt] * d.logu(0.5, 2)
    if recipe == "lr_jump":
        schedule = {"onset": onset, "growth": 1.0, "jump": d.logu(300, 3000)}
        steps = onset + 40
    else:
        diverge_in = d.logu(5, 400)  # steps from onset until the lr is 1e4 x nominal
        schedule = {"onset": onset, "growth": 1e4 ** (1 / diverge_in), "jump": 1.0}
        steps = min(700, onset + int(1.3 * diverge_in) + 40)
    return dict(
        recipe=recipe, model=model, opt=opt, lr=lr, api=api, steps=steps, batch=d.pick((16, 32, 64)), schedule=schedule
    )


def _normal(std: float) -> Any:
    import keras

    return keras.initializers.RandomNormal(stddev=std)


def _vanishing(d: Draw) -> dict[str, Any]:
    recipe = d.pick(("sigmoid_tower", "tanh_small_init"))
    opt = d.pick(OPTIMIZERS)
    if recipe == "sigmoid_tower":
        model = ModelSpec("mlp", d.pick((32, 64, 128)), d.int(8, 12), activation="sigmoid")
    else:
        model = ModelSpec(
            "mlp", d.pick((32, 64, 128)), d.int(7, 10), activation="tanh", kernel_init=_normal(d.logu(0.01, 0.03))
        )
    return dict(
        recipe=recipe,
        model=model,
        opt=opt,
        lr=NOMINAL_LR[opt] * d.logu(0.3, 1.5),
        api=d.pick(("fit", "custom", "watch", "mixed")),
        steps=d.int(120, 200),
        batch=d.pick((16, 32, 64)),
    )


def _nonfinite(d: Draw) -> dict[str, Any]:
    recipe = d.pick(("nan_features", "inf_features", "nan_labels", "exp_overflow"))
    arch = d.pick(("mlp", "cnn", "gru", "transformer")) if recipe != "exp_overflow" else "mlp"
    opt = d.pick(OPTIMIZERS)
    model = ModelSpec(arch, d.pick((16, 32, 64)), d.int(1, 3), exp_layer=recipe == "exp_overflow")
    onset = d.int(2, 120)
    return dict(
        recipe=recipe,
        model=model,
        opt=opt,
        lr=NOMINAL_LR[opt] * d.logu(0.5, 1.5),
        api=d.pick(("fit", "custom", "watch")),
        steps=onset + 30,
        batch=d.pick((16, 32)),
        inject={"step": onset},
        shuffle=False,
        onehot=recipe == "nan_labels",
    )


def _dead_relu(d: Draw) -> dict[str, Any]:
    arch = d.pick(("mlp", "mlp", "cnn"))
    opt = d.pick(OPTIMIZERS)
    import keras

    bias = keras.initializers.Constant(-d.logu(4.0, 12.0))
    model = ModelSpec(arch, d.pick((32, 64, 128)) if arch == "mlp" else d.pick((8, 16)), d.int(1, 3), bias_init=bias)
    return dict(
        recipe="negative_bias",
        model=model,
        opt=opt,
        lr=NOMINAL_LR[opt] * d.logu(0.5, 1.5),
        api=d.pick(("fit", "custom", "watch", "mixed")),
        steps=d.int(80, 160),
        batch=d.pick((16, 32, 64)),
    )


def _frozen_bn(d: Draw) -> dict[str, Any]:
    recipe = d.pick(("no_training_flag", "no_training_flag", "momentum_one"))
    arch = d.pick(("mlp", "cnn", "rescnn"))
    opt = d.pick(OPTIMIZERS)
    model = ModelSpec(
        arch,
        d.pick((32, 64)) if arch == "mlp" else d.pick((8, 16)),
        d.int(1, 3),
        batchnorm=True,
        bn_momentum=1.0 if recipe == "momentum_one" else 0.99,
    )
    out = dict(
        recipe=recipe,
        model=model,
        opt=opt,
        lr=NOMINAL_LR[opt] * d.logu(0.2, 2.0),
        steps=d.int(60, 200),
        batch=d.pick((16, 32, 64)),
    )
    if recipe == "no_training_flag":  # seed 003: raw pixel values, the model never in training mode
        out.update(api=d.pick(("watch", "custom")), training_flag=False, raw=True)
    else:
        out.update(api=d.pick(("fit", "watch", "mixed")))
    return out


def _clip_saturated(d: Draw) -> dict[str, Any]:
    arch = d.pick(("mlp", "cnn", "gru", "transformer"))
    opt = d.pick(OPTIMIZERS)
    mode = d.pick(("global_clipnorm", "clipnorm", "clipvalue"))
    return dict(
        recipe=f"tiny_{mode}",
        model=ModelSpec(arch, d.pick((16, 32, 64)), d.int(1, 3)),
        opt=opt,
        lr=NOMINAL_LR[opt] * d.logu(0.5, 1.5),
        api=d.pick(("fit", "custom", "watch")),
        steps=d.int(160, 260),
        batch=d.pick((16, 32, 64)),
        clip={mode: d.logu(1e-4, 3e-3)},
    )


RECIPES = {
    "exploding_gradients": _exploding,
    "vanishing_gradients": _vanishing,
    "nonfinite": _nonfinite,
    "dead_relu": _dead_relu,
    "frozen_batchnorm": _frozen_bn,
    "clip_saturated": _clip_saturated,
}
#: The alert kinds the zoo draws pathological runs of (those with a recipe), in the protocol's order; the others
#: warn ahead of a pathology (``bench/diagnosis.py`` ``LEADING``).
KINDS: tuple[str, ...] = tuple(k for k in ALERT_KINDS if k in RECIPES)

# --------------------------------------------------------------------------- healthy recipes

HEALTHY_FLAVOURS = (
    "plain",
    "warmup",
    "ragged_last_batch",
    "small_batch",
    "high_lr",
    "finetune_frozen",
    "bn_frozen_on_purpose",
    "batchnorm",
    "mild_clipnorm",
)


def _healthy(d: Draw) -> dict[str, Any]:
    flavour = d.pick(HEALTHY_FLAVOURS)
    arch = d.pick(("mlp", "cnn", "rescnn", "lstm", "gru", "transformer"))
    if flavour in ("bn_frozen_on_purpose", "batchnorm"):
        arch = d.pick(("mlp", "cnn", "rescnn"))
    opt = d.pick(OPTIMIZERS)
    lr = NOMINAL_LR[opt] * (d.logu(2.0, 4.0) if flavour == "high_lr" else d.logu(0.3, 1.5))
    width = d.pick((32, 64, 128)) if arch == "mlp" else d.pick((16, 32))
    model = ModelSpec(
        arch,
        width,
        d.int(1, 3),
        kernel_init="he_normal" if arch in ("mlp", "cnn") else "glorot_uniform",
        batchnorm=flavour in ("bn_frozen_on_purpose", "batchnorm"),
        bn_frozen_on_purpose=flavour == "bn_frozen_on_purpose",
        frozen_first=flavour == "finetune_frozen",
    )
    batch = d.pick((2, 3, 4)) if flavour == "small_batch" else d.pick((16, 32, 64))
    out: dict[str, Any] = dict(
        recipe=flavour,
        model=model,
        opt=opt,
        lr=lr,
        batch=batch,
        api=d.pick(("fit", "custom", "watch", "mixed")),
        steps=d.int(200, 400),
    )
    if flavour == "warmup":
        out["schedule"] = {"warmup": d.int(20, 100)}
    if flavour == "ragged_last_batch":
        out["n"] = batch * d.int(6, 20) + d.int(1, 3)  # every epoch ends on a batch of 1-3 examples
        out["api"] = d.pick(("fit", "custom", "mixed"))
    if flavour == "mild_clipnorm":
        out["clip"] = {d.pick(("clipnorm", "global_clipnorm")): d.logu(5.0, 20.0)}  # catches outliers only
    return out


# --------------------------------------------------------------------------- the zoo


def _make(kind: str, i: int, spec: dict[str, Any], seed: int) -> Run:
    steps, batch = int(spec["steps"]), int(spec["batch"])
    inject = dict(spec.get("inject", {}))
    if inject:
        inject["what"] = float(("nan_features", "inf_features", "nan_labels", "exp_overflow").index(spec["recipe"]))
    n = int(spec.get("n") or min(1797, max(256, batch * 16)))
    if inject:
        n = batch * steps  # one pass: the bad batch comes once, at its step
    train_spec = TrainSpec(
        spec["api"],
        steps,
        batch,
        training_flag=spec.get("training_flag", True),
        shuffle=spec.get("shuffle", True),
        onehot_loss=spec.get("onehot", False),
    )
    m = spec["model"]
    name = f"{i:02d} {kind} {spec['recipe']} {m.arch}/{spec['opt']}/{spec['api']}"
    return Run(
        name,
        kind,
        spec["recipe"],
        m,
        train_spec,
        spec["opt"],
        float(spec["lr"]),
        n,
        schedule=dict(spec.get("schedule", {})),
        clip=dict(spec.get("clip", {})),
        inject=inject,
        raw_inputs=bool(spec.get("raw")),
        seed=seed,
    )


def draw_zoo(seed: int = 2026, per_kind: int = 8, healthy: int = 22) -> list[Run]:
    """``per_kind`` runs of each kind and ``healthy`` healthy runs, in a seeded random order."""
    rng = np.random.default_rng(seed)
    d = Draw(rng)
    kinds = [k for k in KINDS for _ in range(per_kind)] + ["healthy"] * healthy
    order = rng.permutation(len(kinds))
    runs = []
    for i, j in enumerate(order.tolist()):
        kind = kinds[j]
        spec = _healthy(d) if kind == "healthy" else RECIPES[kind](d)
        runs.append(_make(kind, i, spec, int(rng.integers(1 << 30))))
    return runs


def quick_zoo(seed: int = 7) -> list[Run]:
    """A handful of short runs for CI: three pathologies that fire early and two healthy hard negatives."""
    rng = np.random.default_rng(seed)
    d = Draw(rng)
    out = []
    for i, kind in enumerate(("exploding_gradients", "nonfinite", "frozen_batchnorm", "healthy", "healthy")):
        spec = _healthy(d) if kind == "healthy" else RECIPES[kind](d)
        spec["steps"] = min(int(spec["steps"]), 120)
        if kind == "exploding_gradients":  # a gradual runaway: the case lead time is about
            spec.update(
                recipe="lr_runaway",
                model=ModelSpec("mlp", 64, 3),
                opt="sgd",
                lr=0.05,
                api="fit",
                schedule={"onset": 20, "growth": 1.15, "jump": 1.0},
                steps=120,
            )
        if kind in ("nonfinite", "frozen_batchnorm"):  # small models: the CI run stays short
            spec["model"] = replace(spec["model"], arch="mlp", width=32, depth=min(2, spec["model"].depth))
        if kind == "nonfinite":
            spec["inject"] = {"step": 10}
            spec["steps"] = 30
        if kind == "healthy":
            spec["api"] = ("mixed", "custom")[i % 2]
            spec["steps"] = 80
        out.append(_make(kind, i, spec, int(rng.integers(1 << 30))))
    return out


# --------------------------------------------------------------------------- running one


def execute(run: Run, server: str, token: str) -> dict[str, Any]:
    """Train ``run`` against ``server`` with a default ``GradientMonitor``; returns what training showed."""
    import keras

    from gradwatch import GradientMonitor

    keras.utils.clear_session()
    keras.utils.set_random_seed(run.seed)
    data = digits(run.model.arch, run.n, raw=run.raw_inputs, seed=run.seed)
    y = labels(data, run.train.onehot_loss)
    x = data.x.copy()
    if run.inject:
        k, b = int(run.inject["step"]), run.train.batch
        rows = slice(k * b, k * b + max(1, b // 8))
        what = ("nan_features", "inf_features", "nan_labels", "exp_overflow")[int(run.inject["what"])]
        if what == "nan_features":
            x[rows, ..., 0] = np.nan
        elif what == "inf_features":
            x[rows] = np.inf
        elif what == "nan_labels":
            y = y.copy()
            y[rows] = np.nan
        else:
            x[rows] *= 1e4  # the exponential layer overflows to Inf
    data = type(data)(x, data.y)

    def make_optimizer() -> Any:
        lr: Any = run.lr
        if "onset" in run.schedule:
            lr = runaway_schedule(run.lr, int(run.schedule["onset"]), run.schedule["growth"], run.schedule["jump"])
        elif "warmup" in run.schedule:
            lr = warmup_schedule(run.lr, int(run.schedule["warmup"]))
        return optimizer(run.opt, lr, run.clip)

    monitor = GradientMonitor(server=server, token=token, run_name=run.name)
    try:
        model = train(run.model, make_optimizer, data, run.train, monitor, y=y)
    finally:
        monitor.close()  # fit() no longer waits for delivery: the run ends finished once all went out
    out: dict[str, Any] = {}
    if run.kind == "dead_relu":
        out["dead_share"] = dead_share(model, data.x)
    return out
