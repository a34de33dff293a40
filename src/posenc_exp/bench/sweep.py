"""Sweep throughput: the same sweep with Hydra's basic (sequential) launcher and with the joblib launcher.

``python -m posenc_exp.bench sweep`` runs ``python -m posenc_exp.train -m seed=0..N-1`` (the default
experiment, short runs) as real CLI subprocesses into temporary sweep directories: with the basic launcher
(one job after another, torch's default threads) and with ``hydra/launcher=joblib`` (``n_jobs``
jobs at once, each with cores // n_jobs threads, as ``posenc_exp.train.thread_budget`` sets). Each wall
time covers the whole command: interpreter start, imports, and for joblib its worker processes' start-up.

``speedup_parallel = sequential wall time / parallel wall time``; the last line is JSON. The parallel
command pays a fixed start-up the sequential one does not (its workers import torch and Lightning again,
about 5 s each on 2 cores), so the speed-up nears ``n_jobs`` only for jobs that run well beyond that; the
default, 700 epochs, is about 15 s of training per job on a 2-core CPU.

``--control-1thread`` also times the sequential sweep with ``threads=1``: tiny models gain nothing from a
second torch thread, and a thread pool whose cores other processes share slows down badly, so
``speedup_parallel_vs_1thread`` separates that effect from running jobs side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from joblib import cpu_count

from posenc_exp import CONFIG_DIR
from posenc_exp.rundir import METRICS_FILE


def run_sweep(sweep_dir: Path, jobs: int, epochs: int, launcher: list[str]) -> tuple[float, list[dict]]:
    """Wall time of one sweep command, and the metrics of its jobs (every job must have finished)."""
    command = [
        sys.executable,
        "-m",
        "posenc_exp.train",
        "-m",
        *launcher,
        f"seed=range(0,{jobs})",
        f"trainer.max_epochs={epochs}",
        "callbacks.progress_bar=null",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=CONFIG_DIR.parent, capture_output=True, text=True)
    wall = time.perf_counter() - started
    results = sorted(sweep_dir.glob(f"*/{METRICS_FILE}"))
    if result.returncode != 0 or len(results) != jobs:
        sys.exit(f"error: {' '.join(command[2:])} failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return wall, [json.loads(p.read_text()) for p in results]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m posenc_exp.bench sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=8, help="jobs in the sweep (seeds 0..jobs-1)")
    parser.add_argument("--epochs", type=int, default=700, help="epochs per job (the default experiment)")
    parser.add_argument("--n-jobs", type=int, default=cpu_count(), help="joblib jobs at once (default: cores)")
    parser.add_argument("--control-1thread", action="store_true", help="also time the sequential sweep at threads=1")
    args = parser.parse_args(argv)
    modes = {
        "sequential": ["hydra/launcher=basic"],
        **({"sequential_1thread": ["hydra/launcher=basic", "threads=1"]} if args.control_1thread else {}),
        "parallel": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"],
    }
    summary: dict[str, float | int] = {}
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        for mode, launcher in modes.items():
            wall, metrics = run_sweep(Path(tmp) / mode, args.jobs, args.epochs, launcher)
            job_time = statistics.fmean(m["wall_time_s"] for m in metrics)
            threads = metrics[0].get("threads")
            print(
                f"{mode:>18}: {' '.join(launcher)}: {args.jobs} jobs x {args.epochs} epochs in {wall:.1f} s "
                f"(training {job_time:.2f} s per job, {threads} torch threads each)"
            )
            summary |= {f"{mode}_s": round(wall, 2), f"{mode}_job_train_s": round(job_time, 3)}
    summary["speedup_parallel"] = round(summary["sequential_s"] / summary["parallel_s"], 3)
    if args.control_1thread:
        summary["speedup_parallel_vs_1thread"] = round(summary["sequential_1thread_s"] / summary["parallel_s"], 3)
    summary |= {"jobs": args.jobs, "epochs": args.epochs, "n_jobs": args.n_jobs, "cores": cpu_count()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
