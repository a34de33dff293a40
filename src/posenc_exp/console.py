"""What a run and a sweep print on the console when they end, and the third-party noise they do not print."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any


def print_summary(metrics: dict[str, Any]) -> None:
    """The seed printed the encodings before and after training; this prints them as a table."""
    initial, final = metrics["encoding_initial"], metrics["encoding_final"]
    if initial is not None and initial == final:
        print("\nencoding: fixed, unchanged by training")
    elif initial is not None:
        wide = isinstance(initial[0], list)  # a table: one row per position (per bucket for t5)
        row, label = ("row", "row norm") if wide else ("position", "value")
        norm = lambda row: math.sqrt(sum(v * v for v in row)) if wide else row  # noqa: E731
        print(f"\n{row:>8} | {'initial ' + label:>16} | {'final ' + label:>16} | {'change':>9}")
        print(f"{'-' * 8}-+-{'-' * 16}-+-{'-' * 16}-+-{'-' * 9}")
        for i, (a, b) in enumerate(zip(initial, final, strict=True)):
            print(f"{i:>8} | {norm(a):>16.4f} | {norm(b):>16.4f} | {norm(b) - norm(a):>+9.4f}")
    floor = metrics.get("val_loss_floor")
    print(
        f"\nepochs={metrics['epochs']}  train_loss={metrics['train_loss']:.4f}  "
        f"val_loss={metrics['val_loss']:.4f}" + (f"  (best achievable {floor:.4f})" if floor is not None else "")
    )
    if len(metrics["eval"]) > 1:
        names = list(next(iter(metrics["eval"].values())))
        print(f"\n{'length':>8} | " + " | ".join(f"{name:>9}" for name in names))
        for length, values in metrics["eval"].items():
            mark = "*" if int(length) == metrics["train_length"] else " "
            print(f"{length:>7}{mark} | " + " | ".join(f"{values[name]:>9.4f}" for name in names))
        print("(* the training length)")


def print_run_location(output_dir: Path) -> None:
    """The last lines of a run: where its results went and the command that browses them."""
    print(f"\nrun directory: {output_dir}  (metrics.json, checkpoints/, TensorBoard events)")
    print(f"browse it:     tensorboard --logdir {output_dir}")


def print_sweep_end(sweep_dir: Path) -> None:
    """The last lines of a sweep: its directory, how many jobs finished and failed, and the commands that
    report on it and browse it."""
    from posenc_exp.analysis.report import load_runs

    runs = load_runs(sweep_dir)
    finished, failed = sum(r.finished for r in runs), sum(r.error is not None for r in runs)
    other = len(runs) - finished - failed
    counts = f"{finished} finished, {failed} failed" + (f", {other} without results" if other else "")
    failures = " (each failed job's error.txt says why)" if failed else ""
    print(f"\nsweep directory: {sweep_dir}: {len(runs)} jobs, {counts}{failures}")
    print(f"report:          python -m posenc_exp.analysis.report {sweep_dir}")
    print(f"browse it:       tensorboard --logdir {sweep_dir}")


# Lightning's start-up lines that say nothing about this run; the progress bar and real warnings stay.
LIGHTNING_NOISE = ("GPU available:", "TPU available:", "HPU available:", "💡 Tip:")


class _DropLightningNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(LIGHTNING_NOISE)


_DROP_NOISE = _DropLightningNoise()


def quiet_third_party() -> None:
    """Silence, in this process, Lightning's start-up noise (``LIGHTNING_NOISE``) and known third-party
    warnings that no user of this project can act on: torch's ``LeafSpec`` deprecation, raised from inside
    Lightning, and Lightning's hint to use ``srun`` on a machine that has Slurm installed (sweeps reach Slurm
    through ``hydra/launcher=submitit_slurm``). Called by the entry points only, never on import."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DROP_NOISE)  # the same filter object: adding it twice is a no-op
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")
