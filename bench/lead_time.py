"""Lead-time benchmark: how many steps before a runaway learning rate diverges does gradwatch warn?

    python -m bench.diagnosis --lead [--quick] [--seed 2026] [--seeds 2] [--healthy 3]
                                     [--only runaway|healthy] [--json PATH]

Diverging runs: for each architecture (MLP, small CNN, BatchNorm CNN, LSTM, a token Embedding + attention
model, all on scikit-learn's digits) x optimizer (SGD with momentum, Adam, RMSprop) x seed, a healthy
learning rate that from a drawn step grows by a drawn factor of x1.05-1.3 per step. Nothing is picked by
hand: the seeded RNG draws the onset, the growth, the learning rate, the width and the batch size.

Ground truth, independent of the rules, measured in the training process: after every step a callback
computes the loss on one fixed batch; the run diverged at the first step whose loss is non-finite or three
times the best so far. Lead: that step minus the step of the first warning or critical alert (any kind).

Healthy runs with alarming-looking schedules (linear warm-up, cosine with warm-up, one-cycle ramp,
ReduceLROnPlateau, cosine with restarts) score the false alarms: any warning or critical alert there is one,
but for a ``dead_relu`` on a layer the benchmark itself measured dying: after training, the share of its
units that output zero for every training example (``dead_shares``) is above ``DEAD``. A drawn "healthy"
run can kill most of a layer while its loss still falls; naming that is the alert's job.

Every run uses a default ``GradientMonitor`` against one real ``gradwatch serve``; alerts are read from REST.
"""

from __future__ import annotations

import json
import math
import statistics
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import numpy as np

from bench._server import BenchServer

from .zoo import NOMINAL_LR, Draw
from .zoo_models import ModelSpec, build, digits

ARCHS = ("mlp", "cnn", "bn_cnn", "lstm", "embed_attention")
OPTIMIZERS = ("momentum", "adam", "rmsprop")
HEALTHY_SCHEDULES = ("linear_warmup", "cosine_warmup", "one_cycle", "plateau", "restarts")
LOUD = ("warning", "critical")
#: Ground truth: the fixed batch's loss this many times its best so far is divergence.
DIVERGED = 3.0
#: Examples in the fixed batch the ground truth is measured on.
FIXED = 64
#: Steps trained past divergence (the alerts that come after it do not count, nor cost time).
AFTER = 5
#: A healthy run's ReLU layer with more than this share of its units outputting zero for every training
#: example, measured by the benchmark after training, has a dying ReLU: a ``dead_relu`` alert on it is right.
DEAD = 0.5


@dataclass(frozen=True)
class LeadRun:
    name: str
    arch: str
    opt: str
    lr: float
    width: int
    batch: int
    steps: int
    schedule: str  # "runaway" or one of HEALTHY_SCHEDULES
    onset: int = 0  # runaway: the first step whose learning rate grows
    growth: float = 1.0  # runaway: the factor per step
    warmup: int = 0  # warm-up/ramp length, plateau patience or restart period
    seed: int = 0


def draw_runs(seed: int, seeds: int, healthy_per_schedule: int) -> list[LeadRun]:
    d = Draw(np.random.default_rng(seed))
    runs: list[LeadRun] = []
    for arch in ARCHS:
        for opt in OPTIMIZERS:
            for k in range(seeds):
                onset, growth = d.int(20, 80), d.rng.uniform(1.05, 1.3)
                steps = onset + int(math.log(1e5) / math.log(growth)) + 20
                runs.append(
                    LeadRun(
                        f"runaway {arch}/{opt} #{k} x{growth:.3f}@{onset}",
                        arch,
                        opt,
                        NOMINAL_LR[opt] * d.logu(0.5, 2.0),
                        d.pick((16, 32)),
                        d.pick((16, 32, 64)),
                        steps,
                        "runaway",
                        onset,
                        growth,
                        seed=int(d.rng.integers(1 << 30)),
                    )
                )
    for schedule in HEALTHY_SCHEDULES:
        for k in range(healthy_per_schedule):
            arch, opt = d.pick(ARCHS), d.pick(OPTIMIZERS)
            warmup = d.int(20, 100) if schedule != "plateau" else d.int(3, 10)
            runs.append(
                LeadRun(
                    f"healthy {schedule} {arch}/{opt} #{k}",
                    arch,
                    opt,
                    NOMINAL_LR[opt] * d.logu(0.7, 2.0),
                    d.pick((16, 32)),
                    d.pick((16, 32, 64)),
                    d.int(150, 300),
                    schedule,
                    warmup=warmup,
                    seed=int(d.rng.integers(1 << 30)),
                )
            )
    return runs


def quick_runs() -> list[LeadRun]:
    """Two short runs for CI: one runaway, one warm-up."""
    return [
        LeadRun("runaway mlp/momentum quick", "mlp", "momentum", 0.01, 16, 32, 110, "runaway", 30, 1.3, seed=1),
        LeadRun(
            "healthy linear_warmup mlp/adam quick", "mlp", "adam", 1e-3, 16, 32, 80, "linear_warmup", warmup=30, seed=2
        ),
    ]


# --------------------------------------------------------------------------- models and schedules


def _model(run: LeadRun) -> Any:
    import keras

    if run.arch == "embed_attention":
        L = keras.layers
        inputs = keras.Input((64,), dtype="int32")
        h = L.Embedding(17, run.width, name="embed")(inputs)  # pixel intensities 0-16 as tokens
        a = L.MultiHeadAttention(num_heads=2, key_dim=run.width // 2, name="mha")(h, h)
        h = L.LayerNormalization(name="ln")(L.Add()([h, a]))
        h = L.Dense(run.width, activation="relu", name="ffn")(L.GlobalAveragePooling1D()(h))
        return keras.Model(inputs, L.Dense(10, name="logits")(h), name="lead_embed")
    arch = {"bn_cnn": "cnn"}.get(run.arch, run.arch)
    return build(
        ModelSpec(
            arch,
            run.width,
            2,
            kernel_init="he_normal" if arch != "lstm" else "glorot_uniform",
            batchnorm=run.arch == "bn_cnn",
        )
    )


def _data(run: LeadRun) -> tuple[np.ndarray, np.ndarray]:
    n = min(1797, run.batch * 40)
    if run.arch == "embed_attention":
        data = digits("mlp", n, raw=True, seed=run.seed)
        return data.x.astype("int32"), data.y
    data = digits({"bn_cnn": "cnn"}.get(run.arch, run.arch), n, seed=run.seed)
    return data.x, data.y


def _schedule(run: LeadRun) -> Any:
    import keras
    import tensorflow as tf

    lr0, s = run.lr, keras.optimizers.schedules

    class Runaway(s.LearningRateSchedule):  # type: ignore[misc]
        def __call__(self, step: Any) -> Any:
            k = tf.maximum(tf.cast(step, tf.float32) - float(run.onset), 0.0)
            return lr0 * tf.pow(run.growth, k)

        def get_config(self) -> dict[str, Any]:
            return {}

    class OneCycle(s.LearningRateSchedule):  # type: ignore[misc]
        """A cosine ramp from lr/25 to lr over ``warmup`` steps, then a cosine back down (Smith's one-cycle)."""

        def __call__(self, step: Any) -> Any:
            t = tf.cast(step, tf.float32)
            up = tf.minimum(t / run.warmup, 1.0)
            down = tf.clip_by_value((t - run.warmup) / max(1, run.steps - run.warmup), 0.0, 1.0)
            ramp = lr0 / 25 + (lr0 - lr0 / 25) * (1 - tf.cos(math.pi * up)) / 2
            return tf.where(t < run.warmup, ramp, lr0 / 1e3 + (lr0 - lr0 / 1e3) * (1 + tf.cos(math.pi * down)) / 2)

        def get_config(self) -> dict[str, Any]:
            return {}

    if run.schedule == "runaway":
        return Runaway()
    if run.schedule == "linear_warmup":
        return _linear_warmup(lr0, run.warmup)
    if run.schedule == "cosine_warmup":
        return s.CosineDecay(lr0 / 50, decay_steps=run.steps, warmup_target=lr0, warmup_steps=run.warmup)
    if run.schedule == "one_cycle":
        return OneCycle()
    if run.schedule == "restarts":
        return s.CosineDecayRestarts(lr0, first_decay_steps=run.warmup, alpha=0.01)
    return lr0  # plateau: a plain rate that ReduceLROnPlateau lowers


def _linear_warmup(lr0: float, warmup: int) -> Any:
    import keras
    import tensorflow as tf

    class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):  # type: ignore[misc]
        def __call__(self, step: Any) -> Any:
            return lr0 * tf.minimum((tf.cast(step, tf.float32) + 1) / warmup, 1.0)

        def get_config(self) -> dict[str, Any]:
            return {}

    return LinearWarmup()


def _optimizer(name: str, lr: Any) -> Any:
    import keras

    if name == "momentum":
        return keras.optimizers.SGD(lr, momentum=0.9)
    if name == "adam":
        return keras.optimizers.Adam(lr)
    return keras.optimizers.RMSprop(lr)


# --------------------------------------------------------------------------- one run


def train(run: LeadRun, server: str, token: str) -> dict[str, Any]:
    """Train ``run`` with a default monitor; returns the ground truth (the step it diverged at, or None)."""
    import keras

    from gradwatch import GradientMonitor

    keras.utils.clear_session()
    keras.utils.set_random_seed(run.seed)
    x, y = _data(run)
    model = _model(run)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=_optimizer(run.opt, _schedule(run)), loss=loss_fn)
    fixed_x, fixed_y = x[:FIXED], y[:FIXED]
    truth: dict[str, Any] = {"diverged_at": None, "best": math.inf, "steps": 0}

    class Truth(keras.callbacks.Callback):  # type: ignore[misc]
        """The fixed batch's loss after every step; stops AFTER steps past divergence."""

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            step = truth["steps"]
            truth["steps"] += 1
            value = float(loss_fn(fixed_y, model(fixed_x, training=False)))
            if truth["diverged_at"] is None:
                if not math.isfinite(value) or value > DIVERGED * truth["best"]:
                    truth["diverged_at"] = step
                truth["best"] = min(truth["best"], value)
            if truth["diverged_at"] is not None and step >= truth["diverged_at"] + AFTER:
                self.model.stop_training = True

    callbacks: list[Any] = [Truth()]
    if run.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="loss", factor=0.3, patience=run.warmup, min_lr=run.lr / 1e3, verbose=0
            )
        )
    monitor = GradientMonitor(server=server, token=token, run_name=run.name)
    per_epoch = -(-len(x) // run.batch)
    try:
        # The monitor last: it reports the step after Truth ran; ReduceLROnPlateau acts per epoch.
        model.fit(
            x, y, batch_size=run.batch, epochs=-(-run.steps // per_epoch), verbose=0, callbacks=[*callbacks, monitor]
        )
    finally:
        monitor.close()
    out = {"diverged_at": truth["diverged_at"], "steps_trained": truth["steps"]}
    if run.schedule != "runaway":
        out["dead_shares"] = dead_shares(model, x)
    return out


def dead_shares(model: Any, x: np.ndarray) -> dict[str, float]:
    """Per ReLU layer: the share of its units whose output is zero for every example of ``x`` (ground truth)."""
    import keras

    layers = [layer for layer in model.layers if getattr(getattr(layer, "activation", None), "__name__", "") == "relu"]
    if not layers:
        return {}
    outputs = keras.Model(model.inputs, [layer.output for layer in layers])(x, training=False)
    shares = {}
    for layer, out in zip(layers, outputs if isinstance(outputs, (list, tuple)) else [outputs], strict=True):
        alive = np.asarray(out).reshape(-1, out.shape[-1]).max(axis=0) > 0
        shares[layer.name] = round(float(1.0 - alive.mean()), 4)
    return shares


def run_one(run: LeadRun, srv: BenchServer, api: httpx.Client, keep_series: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = asdict(run)
    t0 = time.monotonic()
    try:
        out.update(train(run, srv.url, srv.token))
    except Exception as err:
        out["error"] = f"{type(err).__name__}: {err}"
        out["traceback"] = traceback.format_exc()[-2000:]
    out["seconds"] = round(time.monotonic() - t0, 1)
    rows = [r for r in api.get("/api/runs").json() if r["name"] == run.name]
    out["alerts"] = []
    if rows:
        run_id = max(r["id"] for r in rows)
        deadline = time.monotonic() + 30
        while api.get(f"/api/runs/{run_id}").json()["status"] not in ("finished", "interrupted", "disconnected"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        out["alerts"] = [
            {k: a[k] for k in ("kind", "severity", "step", "layer", "message")}
            for a in api.get(f"/api/runs/{run_id}/alerts").json()
        ]
        if keep_series:  # what the rules saw, to study them offline
            m = api.get(f"/api/runs/{run_id}/metrics", params={"max_points": 1_000_000}).json()
            out["series"] = {k: m[k] for k in ("step", "lr", "loss", "global_norm", "update_ratio")}
    loud = [a for a in out["alerts"] if a["severity"] in LOUD]
    out["first_alert"] = min((a["step"] for a in loud), default=None)
    out["first_alert_kind"] = min(loud, key=lambda a: a["step"])["kind"] if loud else None
    d = out.get("diverged_at")
    out["lead"] = d - out["first_alert"] if d is not None and out["first_alert"] is not None else None
    return out


# --------------------------------------------------------------------------- scoring and report


def score(results: list[dict[str, Any]]) -> dict[str, Any]:
    runaway = [r for r in results if r["schedule"] == "runaway" and not r.get("error")]
    diverged = [r for r in runaway if r.get("diverged_at") is not None]
    # No rule can warn of a runaway before it starts: the lead of a warning at its onset bounds the rest.
    bound = statistics.median([r["diverged_at"] - r["onset"] for r in diverged]) if diverged else None
    unwarned = [r["name"] for r in diverged if r["lead"] is None or r["lead"] <= 0]
    healthy = [r for r in results if r["schedule"] != "runaway" and not r.get("error")]
    false = [(r["name"], a) for r in healthy for a in r["alerts"] if a["severity"] in LOUD and not _dying(r, a)]
    dying = [(r["name"], a) for r in healthy for a in r["alerts"] if a["severity"] in LOUD and _dying(r, a)]
    per_schedule = {
        s: {
            "runs": sum(1 for r in healthy if r["schedule"] == s),
            "loud": len({n for n, _ in false if f" {s} " in n}),
            "dying": len({n for n, _ in dying if f" {s} " in n}),
        }
        for s in HEALTHY_SCHEDULES
    }
    by_arch = {a: [r["lead"] if r["lead"] is not None else None for r in diverged if r["arch"] == a] for a in ARCHS}
    by_opt = {o: [r["lead"] if r["lead"] is not None else None for r in diverged if r["opt"] == o] for o in OPTIMIZERS}
    median = statistics.median([r["lead"] if r["lead"] is not None else 0 for r in diverged]) if diverged else None
    return {
        "runaway_runs": len(runaway),
        "diverged": len(diverged),
        "median_lead": median,
        "median_onset_to_divergence": bound,
        "leads": [r["lead"] for r in diverged],
        "unwarned": unwarned,
        "healthy_runs": len(healthy),
        "healthy_false_alarm_runs": len({n for n, _ in false}),
        "false_alarms": [f"{n}: {a['severity']} {a['kind']} at step {a['step']}: {a['message']}" for n, a in false],
        "dying_relu_found": [f"{n}: {a['kind']} on {a['layer']} at step {a['step']}: {a['message']}" for n, a in dying],
        "per_schedule": per_schedule,
        "lead_by_arch": by_arch,
        "lead_by_optimizer": by_opt,
        "targets": {
            # None: that half of the benchmark was not run (--only)
            "median_lead_at_least_15": None if median is None else median >= 15,
            "no_divergence_without_a_prior_warning": None if not diverged else not unwarned,
            "no_warning_or_critical_on_healthy_runs": None if not healthy else not false,
        },
        "errors": [f"{r['name']}: {r['error']}" for r in results if r.get("error")],
    }


def _dying(run: dict[str, Any], alert: dict[str, Any]) -> bool:
    """A ``dead_relu`` alert on a layer the benchmark measured dying (``DEAD``) is a finding, not a false alarm."""
    share = run.get("dead_shares", {}).get(alert["layer"])
    return alert["kind"] == "dead_relu" and share is not None and share > DEAD


def _lead_cell(leads: list[int | None]) -> str:
    if not leads:
        return "n/a"
    shown = [x if x is not None else 0 for x in leads]
    unwarned = sum(1 for x in leads if x is None or x <= 0)
    return f"{statistics.median(shown):g} ({unwarned} unwarned of {len(leads)})"


def markdown(s: dict[str, Any], command: str) -> str:
    lines = [f"`{command}`", "", "| architecture | " + " | ".join(OPTIMIZERS) + " |", "|---" * 4 + "|"]
    # lead per arch x optimizer from the raw leads
    for arch in ARCHS:
        lines.append(
            f"| {arch} | " + " | ".join(_lead_cell(s["cells"].get(f"{arch}/{o}", [])) for o in OPTIMIZERS) + " |"
        )
    lines += [
        "",
        f"Diverging runs: {s['diverged']} of {s['runaway_runs']} diverged; median lead "
        f"{s['median_lead']} steps (an unwarned run counts 0; from the onset of the runaway to divergence: "
        f"median {s['median_onset_to_divergence']} steps, the most any warning could lead by); not warned "
        f"before divergence: {len(s['unwarned'])}.",
        "",
        "| healthy schedule | runs | runs with a false warning/critical alert | measured dying ReLU named |",
        "|---|---|---|---|",
    ]
    for name, v in s["per_schedule"].items():
        lines.append(f"| {name} | {v['runs']} | {v['loud']} | {v.get('dying', 0)} |")
    verdict = {True: "met", False: "NOT met", None: "not run"}
    lines += ["", "Targets: " + ", ".join(f"{k}: {verdict[v]}" for k, v in s["targets"].items())]
    return "\n".join(lines)


def cells(results: list[dict[str, Any]]) -> dict[str, list[int | None]]:
    out: dict[str, list[int | None]] = {}
    for r in results:
        if r["schedule"] == "runaway" and r.get("diverged_at") is not None:
            out.setdefault(f"{r['arch']}/{r['opt']}", []).append(r["lead"])
    return out


def main(args: Any) -> int:
    from bench._common import machine, write_json

    runs = quick_runs() if args.quick else draw_runs(args.seed, args.seeds, args.healthy)
    if args.only:  # the same draw, one half of it
        if args.only not in ("runaway", "healthy"):
            raise SystemExit(f"--lead --only {args.only!r}: give 'runaway' or 'healthy'")
        runs = [r for r in runs if (r.schedule == "runaway") == (args.only == "runaway")]
    if args.limit:
        runs = runs[: args.limit]
    t0 = time.monotonic()
    results = []
    with (
        BenchServer() as srv,
        httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.token}"}, timeout=60) as api,
    ):
        for run in runs:
            r = run_one(run, srv, api, keep_series=bool(args.json))
            results.append(r)
            if args.json:  # a run cut short keeps what it measured
                with open(f"{args.json}.partial.jsonl", "a") as f:
                    f.write(json.dumps(r) + "\n")
            print(
                f"{r['name']:<55} {r['seconds']:>5}s diverged_at={r.get('diverged_at')} "
                f"first_alert={r['first_alert']} ({r['first_alert_kind']}) lead={r['lead']}"
                + (f" dead={r['dead_shares']}" if r.get("dead_shares") else "")
                + (f" ERROR {r['error']}" if r.get("error") else ""),
                flush=True,
            )
    s = score(results)
    s["cells"] = cells(results)
    command = "python -m bench.diagnosis --lead" + (
        " --quick"
        if args.quick
        else f" --seed {args.seed} --seeds {args.seeds} --healthy {args.healthy}"
        + (f" --only {args.only}" if args.only else "")
    )
    print(markdown(s, command))
    for line in s["false_alarms"] + s["dying_relu_found"] + [f"UNWARNED {n}" for n in s["unwarned"]] + s["errors"]:
        print(line)
    write_json(
        args.json,
        {
            "command": command,
            "machine": machine(),
            "seconds": round(time.monotonic() - t0, 1),
            "summary": s,
            "runs": results,
        },
    )
    return 0
