"""Run every benchmark and write one Markdown + JSON report.

    python -m bench.run_all [--quick] --out bench/results [--only latency,control]

Each benchmark runs in its own process (``python -m bench.<name> [--quick] --json ...``)
one after the other, so none disturbs another; ``--quick`` is the CI smoke test
(about two minutes). Writes ``<out>/report.md`` and ``<out>/report.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import machine

BENCHES: dict[str, str] = {
    "overhead": "Training overhead (step-time ratio vs plain fit)",
    "latency": "Live latency (step end -> browser websocket)",
    "control": "Control latency (POST command -> trainer's ack at the server)",
    "server_scale": "Server scale on one core",
    "long_run": "Long runs (100,000 steps x 200 variables)",
    "trainer_memory": "Trainer memory with the server gone",
    "export": "Export (100,000 steps x 200 variables, Parquet and CSV)",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="bench/results")
    p.add_argument("--only", default=None, help="comma-separated subset of " + ",".join(BENCHES))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.only.split(",") if args.only else list(BENCHES)
    report: dict[str, Any] = {
        "quick": args.quick,
        "machine": machine(),
        "results": {},
        "errors": {},
        "seconds": {},
        "markdown": {},
    }
    for name in names:
        path = out / f"{name}.json"
        cmd = [sys.executable, "-m", f"bench.{name}", "--json", str(path)] + (["--quick"] if args.quick else [])
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        report["seconds"][name] = round(time.monotonic() - t0, 1)
        if proc.returncode != 0 or not path.exists():
            report["errors"][name] = proc.stderr[-3000:]
            print(proc.stderr[-3000:], file=sys.stderr)
            continue
        report["results"][name] = json.loads(path.read_text())
        report["markdown"][name] = proc.stdout.strip()  # each benchmark prints its own table
        print(proc.stdout, flush=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    print(f"wrote {out / 'report.md'} and {out / 'report.json'}")
    return 1 if report["errors"] else 0


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# gradwatch benchmark report{' (--quick)' if report['quick'] else ''}",
        "",
        f"{m['date']}; {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, "
        f"load average at start {m['load_avg_at_start']}.",
        "",
    ]
    for name, title in BENCHES.items():
        if name not in report["results"] and name not in report["errors"]:
            continue
        lines += [
            f"## {title}",
            "",
            f"`python -m bench.{name}{' --quick' if report['quick'] else ''}` ({report['seconds'].get(name, 0)} s)",
            "",
        ]
        if name in report["errors"]:
            lines += ["Failed:", "", "```", report["errors"][name].strip()[-1500:], "```", ""]
            continue
        lines += [report["markdown"][name], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
