"""``gradwatch demo``: an embedded server plus a real training run to watch.

The data is scikit-learn's digits set, which ships inside scikit-learn (nothing
is downloaded). The model and the learning rate are chosen so that clipping
visibly bites: the global norm often exceeds the initial threshold, and moving
the threshold from the page changes the clip scale on the next step.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gradwatch.scenarios import SCENARIOS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gradwatch demo", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address of the embedded server (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port of the embedded server, 0 for any free port")
    p.add_argument("--db", type=Path, default=None, help="SQLite file (default: a fresh temporary file)")
    p.add_argument("--epochs", type=int, default=300, help="training epochs (56 steps each; default 300)")
    p.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        default=None,
        help="instead of the default demo, reproduce one pathology (see docs/alerts.md)",
    )
    p.add_argument("--steps", type=int, default=None, help="steps of a --scenario run (default: the scenario's own)")
    p.add_argument("--guard", action="store_true", help="guard_nonfinite=True: skip non-finite steps")
    p.add_argument(
        "--pause-on",
        action="append",
        default=[],
        metavar="KIND",
        help="alert kind that pauses the run automatically (repeatable)",
    )
    p.add_argument("--clip-threshold", type=float, default=1.0, help="initial global-norm clip threshold")
    p.add_argument(
        "--steps-per-second",
        type=float,
        default=20.0,
        help="slow training to this pace so it can be watched (0: full speed)",
    )
    p.add_argument(
        "--exit-when-done", action="store_true", help="stop the server when training ends instead of waiting for Ctrl-C"
    )
    return p


def digits_data() -> tuple[object, object]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype("float32"), y.astype("int32")


def build_model() -> Any:  # a keras.Model (Keras ships no type hints)
    import keras

    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu", name="dense_in"),
            keras.layers.BatchNormalization(name="bn_1"),
            keras.layers.Dense(64, activation="relu", name="dense_mid"),
            keras.layers.BatchNormalization(name="bn_2"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="digits_mlp",
    )
    # A high learning rate with momentum: raw gradients regularly exceed a
    # global norm of 1, so clipping is visibly at work.
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.3, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from gradwatch.server.config import ServerConfig
    from gradwatch.server.serve import GradwatchServer

    db = args.db or Path(tempfile.mkdtemp(prefix="gradwatch-demo-")) / "demo.db"
    from gradwatch.tokens import generate_token

    # A token of its own, kept in memory: the demo must not overwrite the token
    # file of a real `gradwatch serve` on this machine.
    config = ServerConfig(host=args.host, port=args.port, db_path=db, token=generate_token(), log_level="warning")
    server = GradwatchServer(config)
    server.start()
    try:
        from gradwatch import GradientMonitor

        if args.scenario is not None:
            return run_scenario(args, server)
        x, y = digits_data()
        model = build_model()
        monitor = GradientMonitor(
            server=server.url,
            token=server.token,
            run_name="demo: digits MLP",
            clip_threshold=args.clip_threshold,
        )
        callbacks: list[object] = [monitor]
        if args.steps_per_second > 0:
            callbacks.append(pace_callback(args.steps_per_second))
        print(f"gradwatch demo: training {args.epochs} epochs on scikit-learn digits; Ctrl-C to stop", flush=True)
        try:
            model.fit(x, y, batch_size=32, epochs=args.epochs, verbose=0, callbacks=callbacks)
        except KeyboardInterrupt:
            print("gradwatch demo: training interrupted", flush=True)
            return 130
        monitor.close()  # finished, not idle: this demo trains no more
        print("gradwatch demo: training finished; the run stays browsable", flush=True)
        if not args.exit_when_done:
            print("gradwatch demo: server still running, Ctrl-C to quit", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
    return 0


def run_scenario(args: argparse.Namespace, server: object) -> int:
    scenario = SCENARIOS[args.scenario]
    print(f"gradwatch demo: scenario {scenario.name}: {scenario.story}", flush=True)
    kwargs = {
        "server": server.url,  # type: ignore[attr-defined]
        "token": server.token,  # type: ignore[attr-defined]
        "run_name": f"scenario: {scenario.name}",
        "guard_nonfinite": args.guard,
        "pause_on": tuple(args.pause_on),
    }
    scenario.run(kwargs, args.steps or scenario.default_steps)
    print("gradwatch demo: scenario finished; the run stays browsable", flush=True)
    if not args.exit_when_done:
        print("gradwatch demo: server still running, Ctrl-C to quit", flush=True)
        while True:
            time.sleep(3600)
    return 0


def pace_callback(steps_per_second: float) -> object:
    """A callback that sleeps between batches so a small demo does not end before anyone can look."""
    import keras

    class Pace(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.period = 1.0 / steps_per_second
            self._next = 0.0

        def on_train_batch_end(self, batch: int, logs: dict[str, object] | None = None) -> None:
            now = time.monotonic()
            if now < self._next:
                time.sleep(self._next - now)
            self._next = max(now, self._next) + self.period

    return Pace()


if __name__ == "__main__":
    sys.exit(main())
