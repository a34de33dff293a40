"""The seed's run through the framework against the seed's own kind of script: whole processes, paired.

``python -m posenc_exp.bench seed`` times two commands as a user runs them, alternating (A B A B):

- A, the framework: ``python -m posenc_exp.train experiment=toy`` (the seed project's settings: 72 training
  windows of 10 values, batch size 1, 1000 epochs = 72,000 Adam steps at lr 5e-3, the encoding's histogram
  every epoch, a validation pass and ``last.ckpt`` every 10 epochs, images every 100, and all at the last),
  with its default progress bar and one torch thread;
- B, a plain PyTorch loop in the seed project's style (``main.py`` of ``positional-embedding-expt``): a random
  series of 100 values cut into its 90 windows, the encoding vector added to each window, a 10-128-1
  ReLU/tanh network, ``nn.MSELoss``, ``torch.optim.Adam`` at 5e-3, batch size 1 in the windows' order,
  ``zero_grad``, ``backward``, ``step`` and ``loss.item()`` at each step, a line printed every 20 epochs,
  1000 epochs = 90,000 steps, no validation and nothing saved; one torch thread, as the framework's default.

With ``--before <checkout>`` (the root of another posenc-exp checkout, e.g. an older commit's
``git archive``), each pair also runs that checkout's ``experiment=toy`` (its ``src`` first on ``PYTHONPATH``,
its ``conf``): a before/after comparison on the same machine in the same minutes, A B C A B C.

Each time is the whole process, from its start to its exit (Python start-up, imports, Hydra's composition,
building, training, writing the run directory), as ``time`` would show it; each side's training time alone
is also given (the framework's ``wall_time_s`` from ``metrics.json``; the loop's own clock), and each
process's CPU time (user + system, its threads included: ``getrusage`` of the children), which a busy
machine stretches far less than the wall time. ``ratio`` is the framework's total wall time over the plain
loop's across the pairs (goal: <= 1.0), ``ratio_cpu`` the same for CPU time. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from posenc_exp import CONFIG_DIR
from posenc_exp.rundir import METRICS_FILE

FRAMEWORK = ["experiment=toy"]
# The seed script's sizes: the series, the window, the hidden layer, the learning rate, the epochs.
XLEN, CONTEXT, HIDDEN, LR, EPOCHS = 100, 10, 128, 5e-3, 1000


def plain_loop(epochs: int = EPOCHS, seed: int = 0) -> float:
    """The seed's training, written as its ``main.py`` does; returns the loop's seconds (prints its losses)."""
    import torch
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(seed)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.positions = nn.Parameter(torch.randn(CONTEXT))
            self.ff = nn.Sequential(nn.Linear(CONTEXT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1), nn.Tanh())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.ff(x + self.positions)

    series = torch.randn(XLEN)
    windows = [(series[i : i + CONTEXT], series[i + CONTEXT : i + CONTEXT + 1]) for i in range(XLEN - CONTEXT)]
    model = Model()
    criterion = nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    started = time.perf_counter()
    for epoch in range(epochs):
        total = 0.0
        for x, y in windows:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item()
        if (epoch + 1) % 20 == 0:
            print(f"Epoch {epoch + 1}/{epochs}, Loss: {total / len(windows):.4f}")
    return time.perf_counter() - started


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run ``command`` to its exit: (wall seconds, CPU seconds (user + system) of the process and its
    threads, its stdout); exits with an ``error:`` line if it fails."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(command[2:])} failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    cpu = cpu_after.ru_utime - cpu_before.ru_utime + cpu_after.ru_stime - cpu_before.ru_stime
    return wall, cpu, result.stdout


def run_plain(epochs: int) -> tuple[float, float, float]:
    """The plain loop as its own process: (wall seconds, CPU seconds, the loop's own seconds)."""
    command = [sys.executable, "-m", "posenc_exp.bench", "seed", "--plain-loop", "--epochs", str(epochs)]
    wall, cpu, stdout = timed(command, CONFIG_DIR.parent)
    return wall, cpu, json.loads(stdout.splitlines()[-1])["loop_s"]


def run_framework(run_dir: Path, epochs: int, checkout: Path | None = None) -> tuple[float, float, dict[str, Any]]:
    """``python -m posenc_exp.train experiment=toy`` as its own process, this checkout's or ``checkout``'s:
    (wall seconds, CPU seconds, its ``metrics.json``)."""
    command = [sys.executable, "-m", "posenc_exp.train", *FRAMEWORK, f"hydra.run.dir={run_dir}"]
    if epochs != EPOCHS:
        command.append(f"trainer.max_epochs={epochs}")
    env = dict(os.environ)
    if checkout is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(checkout / "src"), env.get("PYTHONPATH", "")])
    wall, cpu, _ = timed(command, checkout or CONFIG_DIR.parent, env)
    return wall, cpu, json.loads((run_dir / METRICS_FILE).read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m posenc_exp.bench seed", description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=2, help="framework/plain pairs, run A B A B")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs on both sides (the seed's: 1000)")
    parser.add_argument("--before", type=Path, help="another checkout's root, also timed in each pair")
    parser.add_argument("--plain-loop", action="store_true", help=argparse.SUPPRESS)  # the B process itself
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.pairs < 1:
        sys.exit(f"error: --epochs={args.epochs} --pairs={args.pairs} is not allowed: expected integers >= 1")
    if args.before is not None and not (args.before / "src" / "posenc_exp").is_dir():
        sys.exit(f"error: --before={args.before} is not allowed: expected a checkout's root, with src/posenc_exp")
    if args.plain_loop:
        print(json.dumps({"loop_s": plain_loop(args.epochs)}))
        return
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench_seed_") as tmp:
        for pair in range(args.pairs):
            framework_s, framework_cpu_s, metrics = run_framework(Path(tmp) / f"run{pair}", args.epochs)
            steps = metrics["optimizer_steps"]
            plain_s, plain_cpu_s, plain_train_s = run_plain(args.epochs)
            row = {"framework_s": framework_s, "framework_cpu_s": framework_cpu_s}
            row |= {"framework_train_s": metrics["wall_time_s"], "plain_s": plain_s, "plain_cpu_s": plain_cpu_s}
            row |= {"plain_train_s": plain_train_s}
            line = (
                f"pair {pair + 1}: experiment=toy {framework_s:6.2f} s (CPU {framework_cpu_s:6.2f} s, training "
                f"{metrics['wall_time_s']:6.2f} s), plain loop {plain_s:6.2f} s (CPU {plain_cpu_s:6.2f} s, "
                f"training {plain_train_s:6.2f} s): ratio {framework_s / plain_s:.3f}, "
                f"CPU {framework_cpu_s / plain_cpu_s:.3f}"
            )
            if args.before is not None:
                before_s, before_cpu_s, before = run_framework(Path(tmp) / f"before{pair}", args.epochs, args.before)
                row |= {"before_s": before_s, "before_cpu_s": before_cpu_s, "before_train_s": before["wall_time_s"]}
                line += (
                    f"; before {before_s:6.2f} s (CPU {before_cpu_s:6.2f} s): ratio {before_s / plain_s:.3f}, "
                    f"CPU {before_cpu_s / plain_cpu_s:.3f}"
                )
            rows.append(row)
            print(line, flush=True)
    total = {key: sum(row[key] for row in rows) for key in rows[0]}
    ratio = total["framework_s"] / total["plain_s"]
    print(
        f"experiment=toy / plain loop, whole processes over {args.pairs} pairs: {ratio:.3f}x wall, "
        f"{total['framework_cpu_s'] / total['plain_cpu_s']:.3f}x CPU"
    )
    summary = {
        "ratio": round(ratio, 3),
        "ratio_cpu": round(total["framework_cpu_s"] / total["plain_cpu_s"], 3),
        "ratio_training": round(total["framework_train_s"] / total["plain_train_s"], 3),
    }
    if args.before is not None:
        summary["ratio_before"] = round(total["before_s"] / total["plain_s"], 3)
        summary["ratio_cpu_before"] = round(total["before_cpu_s"] / total["plain_cpu_s"], 3)
    summary |= {key: [round(row[key], 2) for row in rows] for key in total}
    summary |= {"epochs": args.epochs, "steps": {"framework": steps, "plain": (XLEN - CONTEXT) * args.epochs}}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
