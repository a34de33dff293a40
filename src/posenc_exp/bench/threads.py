"""Torch threads: the default policy against each thread count, on an idle machine and beside busy ones.

``python -m posenc_exp.bench threads`` runs two real CLI runs, the default run (``python -m posenc_exp.train``)
and a small attention run (``model=attention data=copy encoding=rope model.causal=true``), with the default
thread policy (``threads`` unset: one thread, ``posenc_exp.sweep.thread_budget``) and with ``threads=n`` for
every ``n`` up to the machine's cores; first on the machine as it is ("idle"), then beside two busy
processes (pure-Python loops) that the bench starts and stops itself ("busy"). The time is the run's own
training time (``wall_time_s`` of its ``metrics.json``: start-up and imports excluded).

In each condition one untimed run of each kind comes first (the bench's first run took 1.2 and 1.4 times as
long as the same command right after it, in two sessions on the 2-core machine), then ``--repeats`` rounds,
each running every policy once, the order rotated from one round to the next; a policy's time is its median
over the rounds.

``ratio = default policy's time / the best time`` of each run and condition: the default must be within
1.2 of the best in all four. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from joblib import cpu_count

from posenc_exp import CONFIG_DIR
from posenc_exp.rundir import METRICS_FILE

RUNS = {
    "default": [],
    "attention": ["model=attention", "data=copy", "encoding=rope", "model.causal=true", "trainer.max_epochs=3"],
}


@contextmanager
def busy(processes: int) -> Iterator[None]:
    """``processes`` CPU-bound Python loops running for the duration of the block."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def train_seconds(run_dir: Path, overrides: list[str]) -> float:
    """The training time of one CLI run (``metrics.json``'s ``wall_time_s``)."""
    command = [sys.executable, "-m", "posenc_exp.train", *overrides, "trainer.enable_progress_bar=false"]
    command += ["callbacks.progress_bar=null", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command, cwd=CONFIG_DIR.parent, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(command[2:])} failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return json.loads((run_dir / METRICS_FILE).read_text())["wall_time_s"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m posenc_exp.bench threads", description=__doc__.split("\n")[0])
    parser.add_argument("--busy", type=int, default=2, help="busy processes in the busy condition")
    parser.add_argument("--max-threads", type=int, default=cpu_count(), help="the largest threads=n tried")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every policy, after a warm-up run")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.max_threads < 1 or args.busy < 0:
        sys.exit(
            f"error: --repeats={args.repeats} --max-threads={args.max_threads} --busy={args.busy} is not allowed: "
            "expected --repeats and --max-threads >= 1, --busy >= 0"
        )
    policies = {"default": [], **{f"threads={n}": [f"threads={n}"] for n in range(1, args.max_threads + 1)}}
    seconds: dict[str, dict[str, dict[str, float]]] = {}
    names = list(policies)
    with tempfile.TemporaryDirectory(prefix="bench_threads_") as tmp:
        for condition in ("idle", "busy"):
            with busy(args.busy if condition == "busy" else 0):
                for run, overrides in RUNS.items():
                    train_seconds(Path(tmp) / f"{condition}_{run}_warmup", overrides)
                    rounds: dict[str, list[float]] = {policy: [] for policy in names}
                    for round_ in range(args.repeats):
                        shift = round_ % len(names)
                        for policy in names[shift:] + names[:shift]:
                            directory = Path(tmp) / f"{condition}_{run}_{policy.replace('=', '')}_{round_}"
                            rounds[policy].append(train_seconds(directory, [*overrides, *policies[policy]]))
                    for policy, values in rounds.items():
                        value = round(statistics.median(values), 3)  # wall_time_s has 3 decimals
                        seconds.setdefault(condition, {}).setdefault(run, {})[policy] = value
                        runs = ", ".join(f"{v:.2f}" for v in values)
                        print(f"{condition:>5} {run:>9} {policy:>10}: {value:8.2f} s (median of {runs})", flush=True)
    ratios = {
        f"{condition}/{run}": round(times["default"] / min(times.values()), 3)
        for condition, by_run in seconds.items()
        for run, times in by_run.items()
    }
    summary = {
        "seconds": seconds,
        "default_over_best": ratios,
        "cores": cpu_count(),
        "busy": args.busy,
        "repeats": args.repeats,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
