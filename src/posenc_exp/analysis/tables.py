"""The length-generalization table of a sweep: ``python -m posenc_exp.analysis.tables <sweep dir>``.

One row per task (``data``) and encoding, one column per evaluation length as a multiple of the training
length (tasks train at different lengths, so columns are factors: 1x, 1.25x, ...). Each cell is the mean ±
sample standard deviation over the seeds of the task's headline metric at that length:

- token tasks: ``seq_acc``, the share of sequences whose whole answer is right (exact match, the metric of
  Kazemnejad et al. 2023), or ``acc`` (per answer token) with ``--token-metric acc``;
- regression tasks: ``loss_gap``, the validation MSE minus the best achievable one, where the task knows it;
  else ``loss``;
- language modelling (``data=text``): ``ppl``, the perplexity (the metric of Press et al. 2022).

Tasks that log a score (the Chomsky tasks, ``val_score``: the per-token accuracy averaged over the evaluation
lengths beyond the training length) add two columns: ``score``, its mean ± standard deviation over the seeds,
and ``best``, its maximum over the seeds (Delétang et al., ICLR 2023, report both). Replicas count as seeds.

Runs are read with :mod:`posenc_exp.analysis.report` (its loading, grouping and formatting); rows keep the order in
which the sweep ran them. A directory may hold several sweeps (``tables outputs/multiruns/chomsky``): every run
below it is read, and any other key that differs between the runs (``encoding@encoding.base``,
``encoding.scaling``, ``data.format`` ...) gets its own column, so that rows are never merged across it. Prints a
markdown table.

``--scores`` prints the Chomsky tasks' scores compactly instead: one row per encoding (and other differing keys),
one column per task, each cell ``mean (best) [1x]``: the score's mean and maximum over the seeds and the headline
metric at the training length (mean over the seeds), all in percent. Read the ``[1x]`` before the score: a task
not learned at the training length cannot generalize beyond it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from posenc_exp.analysis.report import Cell, Run, format_stat, group_cells, load_runs, markdown_table, swept_keys

ROW_KEYS = ["data", "encoding"]
SCORE = "val_score"  # metrics.json: the score of the Chomsky tasks (posenc_exp.data.chomsky)


def headline_metric(cell: Cell, token_metric: str) -> str:
    """``token_metric`` for token tasks, else ``loss_gap`` where logged, ``ppl`` for language models, else ``loss``."""
    names = {key.split("/")[2] for run in cell.finished for key in run.metrics if key.startswith("eval/")}
    return next(name for name in (token_metric, "loss_gap", "ppl", "loss") if name in names)


def factor_label(factor: float) -> str:
    return f"{factor:g}x"


def row_keys(runs: list[Run]) -> list[str]:
    """``data``, ``encoding`` and every other key that differs between the runs, except the seed."""
    return [*ROW_KEYS, *(key for key in swept_keys(runs) if key not in (*ROW_KEYS, "seed"))]


def finished_cells(runs: list[Run], keys: list[str]) -> list[Cell]:
    """The cells of ``keys`` that have a finished run, in the order the runs first show their values."""
    order = {key: list(dict.fromkeys(run.overrides.get(key) for run in runs)) for key in keys}
    return sorted(
        (cell for cell in group_cells(runs, keys) if cell.finished),
        key=lambda cell: tuple(order[key].index(cell.runs[0].overrides.get(key)) for key in keys),
    )


def length_table(sweep_dir: Path, token_metric: str = "seq_acc") -> str:
    """The markdown table of the module docstring."""
    runs = load_runs(sweep_dir)
    keys = row_keys(runs)
    cells = finished_cells(runs, keys)
    rows, factors = [], set()
    scored = any(SCORE in run.metrics for cell in cells for run in cell.finished)
    for cell in cells:
        train_length = int(cell.finished[0].metrics["train_length"])
        lengths = cell.finished[0].eval_lengths()
        name = headline_metric(cell, token_metric)
        by_factor = {n / train_length: format_stat(*cell.stats(f"eval/{n}/{name}")) for n in lengths}
        factors |= by_factor.keys()
        fixed = [*(str(v) for v in cell.values), f"{name} (L={train_length})", str(len(cell.finished))]
        if scored:
            fixed += [format_stat(*cell.stats(SCORE)), f"{cell.maximum(SCORE):.4g}"]
        rows.append((fixed, by_factor))
    columns = sorted(factors)
    header = ["task", "encoding", *keys[len(ROW_KEYS) :], "metric", "seeds", *(["score", "best"] if scored else [])]
    header += [factor_label(f) for f in columns]
    return markdown_table(header, [[*fixed, *(values.get(f, "") for f in columns)] for fixed, values in rows])


def score_table(sweep_dir: Path, token_metric: str = "acc") -> str:
    """``--scores``: the compact table of the module docstring."""
    runs = [run for run in load_runs(sweep_dir) if run.finished and SCORE in run.metrics]
    keys = [key for key in row_keys(runs) if key != "data"]
    tasks = list(dict.fromkeys(run.overrides.get("data") for run in runs))
    variants = {cell.values: cell for cell in finished_cells(runs, keys)}
    by_task = {(cell.values[0], cell.values[1:]): cell for cell in group_cells(runs, ["data", *keys])}
    rows = []
    for values in variants:
        label = ", ".join(str(v) if k == "encoding" else f"{k}={v}" for k, v in zip(keys, values, strict=True) if v)
        row = [label or "the config's"]
        for task in tasks:
            cell = by_task.get((task, values))
            if cell is None:
                row.append("")
                continue
            at_1x = cell.stats(f"eval/{int(cell.finished[0].metrics['train_length'])}/{token_metric}")[0]
            row.append(f"{100 * cell.stats(SCORE)[0]:.1f} ({100 * cell.maximum(SCORE):.1f}) [{100 * at_1x:.0f}]")
        rows.append(row)
    return markdown_table(["encoding", *(str(task) for task in tasks)], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m posenc_exp.analysis.tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory, e.g. outputs/multiruns/<time>")
    parser.add_argument("--token-metric", choices=["seq_acc", "acc"], default="seq_acc")
    parser.add_argument("--scores", action="store_true", help="the Chomsky tasks' scores, one column per task")
    args = parser.parse_args(argv)
    if not any(args.sweep_dir.glob("**/metrics.json")):
        print(f"error: sweep_dir={args.sweep_dir} holds no finished runs (no metrics.json)", file=sys.stderr)
        sys.exit(2)
    if args.scores:
        print(score_table(args.sweep_dir, "acc" if args.token_metric == "seq_acc" else args.token_metric))
    else:
        print(length_table(args.sweep_dir, args.token_metric))


if __name__ == "__main__":
    main()
