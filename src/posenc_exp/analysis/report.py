"""The sweep report: ``python -m posenc_exp.analysis.report <sweep dir>``.

Reads every job directory of a sweep (the directories holding ``.hydra/overrides.yaml``), then writes
``report.md``, ``report.csv`` and ``plots/*.png`` into the sweep directory and prints the tables.

- The *swept keys* are the override keys whose values differ between the runs. The table has one row
  (cell) per combination of swept keys, replicate keys (``seed`` and ``*.seed``) excepted: a cell's metrics
  are the mean ± sample standard deviation over its finished runs, with ``runs`` the number of finished runs
  and ``missing`` the number of runs without results (failed or unfinished).
- Plots: each metric against each numeric swept key, one line per value of the other swept keys (e.g. per
  encoding); with no numeric key, a bar per cell; where runs were evaluated at several lengths
  (``metrics.json`` key ``eval``: ``{"<length>": {"acc": .., "loss": ..}}``), each of those metrics against
  the evaluation length, one line per cell; for language models (``metrics.json`` key ``position_loss``),
  the perplexity by position inside the longest evaluation window, one line per cell
  (``ppl_by_position.png``, :func:`position_perplexity_plot`).
- Runs without ``metrics.json`` are listed as failed (with the ``error.txt`` line ``posenc_exp.train``
  writes for a job that failed on bad input or a non-finite loss) or unfinished; they never stop the report.

What marks a report *partial*: the :class:`posenc_exp.sweep.SweepStatus` Hydra callback (``conf/hydra/default.yaml``)
writes ``<sweep dir>/sweep_status.json`` with ``"state": "running"`` and the launching process's pid and
host when the sweep starts, and ``"finished"`` when Hydra's sweep returns. ``running`` with a live pid (or
another host) means the sweep is still going; ``running`` with a dead pid means it stopped early (killed, or
a job raised): rerunning the same command resumes it. Without that file (sweeps made before it existed), a
job directory without results that changed in the last ``ACTIVE_WINDOW_S`` seconds counts as running.
Jobs Hydra has not started yet have no directory; their number comes from ``multirun.yaml`` (the sweep's
overrides, expanded as Hydra's basic sweeper does; ``n_trials`` for Optuna).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from posenc_exp.analysis.plots import grid, save
from posenc_exp.rundir import (
    FAILURE_FILE,
    METRICS_FILE,
    OVERRIDES_FILE,
    REPLICA_DIR,
    STATUS_FILE,
    numbers,
    parse_overrides,
)

ACTIVE_WINDOW_S = 600  # without STATUS_FILE: a job dir changed this recently counts as running
PLOT_DIR = "plots"


def is_replicate_key(key: str) -> bool:
    """Keys that replicate a configuration rather than change it: averaged over, not grouped by."""
    return key == "seed" or key.endswith(".seed")


def typed(value: str) -> int | float | str:
    """An override value as a number where it is one, else the string."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


@dataclass
class Run:
    directory: Path
    overrides: dict[str, str]
    metrics: dict[str, float] | None = None  # flattened; None when the run has no readable metrics.json
    error: str | None = None  # the failure line, if the job wrote one
    modified: float = 0.0  # newest mtime in the job directory

    @property
    def finished(self) -> bool:
        return self.metrics is not None

    def eval_lengths(self) -> list[int]:
        return sorted({int(k.split("/")[1]) for k in self.metrics or {} if k.startswith("eval/")})


def newest_mtime(directory: Path) -> float:
    return max((p.stat().st_mtime for p in directory.rglob("*") if p.is_file()), default=directory.stat().st_mtime)


def load_run(job_dir: Path) -> Run:
    overrides = OmegaConf.to_container(OmegaConf.load(job_dir / OVERRIDES_FILE))
    run = Run(job_dir, parse_overrides([str(o) for o in overrides or []]), modified=newest_mtime(job_dir))
    metrics_file, failure_file = job_dir / METRICS_FILE, job_dir / FAILURE_FILE
    if metrics_file.is_file():
        try:
            run.metrics = numbers(json.loads(metrics_file.read_text()))
        except (json.JSONDecodeError, AttributeError) as error:
            run.error = f"unreadable {METRICS_FILE}: {error}"
    elif failure_file.is_file():
        run.error = failure_file.read_text().strip() or "failed"
    return run


def job_number(run: Run) -> tuple[int, int, str]:
    """Sweep jobs in Hydra's order, a job's replicas in theirs."""
    directory, replica = run.directory, -1
    if directory.name.startswith("replica_") and directory.name[8:].isdigit():
        directory, replica = directory.parent, int(directory.name[8:])
    return (int(directory.name) if directory.name.isdigit() else sys.maxsize), replica, str(run.directory)


def load_runs(sweep_dir: Path) -> list[Run]:
    """Every job directory under ``sweep_dir`` (or ``sweep_dir`` itself for a single run), by job number. A job
    of several replicas counts as its replicas' runs (``replica_<k>/``, each with its seed), like seeds."""
    job_dirs = {p.parent.parent for p in sweep_dir.glob("**/.hydra/overrides.yaml")}
    job_dirs = {d for d in job_dirs if not (d / REPLICA_DIR.format(0)).is_dir()}
    return sorted((load_run(d) for d in job_dirs), key=job_number)


def swept_keys(runs: list[Run]) -> list[str]:
    """Override keys whose value differs between runs (or is missing in some), in first-seen order."""
    keys = list(dict.fromkeys(k for run in runs for k in run.overrides))
    return [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1]


def sort_key(values: tuple) -> tuple:
    """Numbers before strings, each in natural order; ``None`` (a key a run did not set) first."""
    return tuple((0, 0, "") if v is None else (1, v, "") if isinstance(v, int | float) else (2, 0, v) for v in values)


@dataclass
class Cell:
    """One combination of swept (non-replicate) keys and its runs."""

    values: tuple
    runs: list[Run] = field(default_factory=list)

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.finished]

    def stats(self, metric: str) -> tuple[float, float, int]:
        """``(mean, sample std, count)`` over the finished runs that report ``metric``; std 0 for one run."""
        values = [r.metrics[metric] for r in self.finished if metric in r.metrics]
        if not values:
            return math.nan, math.nan, 0
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)

    def maximum(self, metric: str) -> float:
        """The largest value of ``metric`` over the finished runs that report it (NaN for none): the best seed,
        the statistic Delétang et al. (ICLR 2023) report beside the mean."""
        return max((r.metrics[metric] for r in self.finished if metric in r.metrics), default=math.nan)

    def label(self, keys: list[str]) -> str:
        return ", ".join(f"{k}={v}" for k, v in zip(keys, self.values, strict=True)) or "all runs"


def group_cells(runs: list[Run], keys: list[str]) -> list[Cell]:
    cells: dict[tuple, Cell] = {}
    for run in runs:
        values = tuple(typed(run.overrides[k]) if k in run.overrides else None for k in keys)
        cells.setdefault(values, Cell(values)).runs.append(run)
    return sorted(cells.values(), key=lambda c: sort_key(c.values))


def metric_names(runs: list[Run]) -> list[str]:
    return list(dict.fromkeys(m for run in runs if run.finished for m in run.metrics))


def varying(runs: list[Run], metric: str) -> bool:
    values = {run.metrics.get(metric) for run in runs if run.finished}
    return len({round(v, 12) if isinstance(v, float) and math.isfinite(v) else str(v) for v in values}) > 1


def expected_jobs(sweep_dir: Path) -> int | None:
    """The number of jobs the sweep command asked for, from Hydra's ``multirun.yaml``; None if unknown."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        config = OmegaConf.load(path)
        sweeper = config.hydra.sweeper
        target = str(sweeper.get("_target_", ""))
        if "optuna" in target:
            return int(sweeper.n_trials)
        if target.endswith("BasicSweeper"):
            from hydra.core.override_parser.overrides_parser import OverridesParser

            # The basic sweeper runs the product of each key's values, a command-line key replacing the same
            # key of the config's hydra.sweeper.params; counted with the public override parser.
            params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
            overrides = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
            sizes = {
                o.get_key_element(): len(list(o.sweep_iterator())) if o.is_sweep_override() else 1 for o in overrides
            }
            return math.prod(sizes.values())
    except Exception:  # an unusual sweep (e.g. glob over groups): the count is only informative
        return None
    return None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class SweepState:
    partial: bool
    note: str
    running: bool  # runs without results may still be computing


def sweep_state(sweep_dir: Path, runs: list[Run], now: float | None = None) -> SweepState:
    """Whether the sweep is complete, still running, or stopped early (see the module docstring)."""
    now = time.time() if now is None else now
    expected = expected_jobs(sweep_dir)
    not_started = max(0, expected - len(runs)) if expected else 0
    done = sum(r.finished for r in runs)
    counts = f"{done} of {expected or len(runs)} jobs finished"
    try:
        status = json.loads((sweep_dir / STATUS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        status = None  # no marker (or an unreadable one): recent activity decides, below
    if isinstance(status, dict) and {"state", "pid", "host"} <= set(status):
        if status["state"] == "finished":
            return SweepState(not_started > 0, f"finished: {counts}", running=False)
        if status["host"] != socket.gethostname() or process_alive(int(status["pid"])):
            return SweepState(True, f"partial, sweep still running: {counts}", running=True)
        return SweepState(
            True, f"partial, sweep stopped before finishing: {counts}; rerun the same command to resume", False
        )
    active = any(not r.finished and r.error is None and now - r.modified < ACTIVE_WINDOW_S for r in runs)
    if active:
        return SweepState(True, f"partial, sweep may still be running: {counts}", running=True)
    return SweepState(not_started > 0, f"{'partial: ' if not_started else ''}{counts}", running=False)


def format_stat(mean: float, std: float, count: int) -> str:
    if count == 0:
        return ""
    return f"{mean:.4g}" if count == 1 else f"{mean:.4g} ± {std:.2g}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Report:
    sweep_dir: Path
    runs: list[Run]
    keys: list[str]  # swept, non-replicate: the table's grouping
    cells: list[Cell]
    state: SweepState
    metrics: list[str]  # every flattened metric (CSV)
    shown: list[str]  # top-level metrics that vary (markdown table, plots)
    constant: dict[str, float]  # top-level metrics equal in every finished run
    plots: list[Path] = field(default_factory=list)

    def eval_metric(self) -> str | None:
        """The per-length metric of the length table: accuracy where there is one, perplexity for language
        models, else the loss."""
        names = {m.split("/")[2] for m in self.metrics if m.startswith("eval/")}
        return next((n for n in ("acc", "seq_acc", "ppl", "loss") if n in names), None)

    def eval_lengths(self) -> list[int]:
        return sorted({n for run in self.runs if run.finished for n in run.eval_lengths()})

    def cell_table(self) -> str:
        header = [*self.keys, "runs", "missing", *self.shown]
        rows = [
            [
                *(str(v) for v in cell.values),
                str(len(cell.finished)),
                str(len(cell.runs) - len(cell.finished)),
                *(format_stat(*cell.stats(m)) for m in self.shown),
            ]
            for cell in self.cells
        ]
        return markdown_table(header, rows)

    def length_table(self) -> str | None:
        lengths, name = self.eval_lengths(), self.eval_metric()
        if len(lengths) < 2 or name is None:
            return None
        header = [*self.keys, *(f"{name}@{n}" for n in lengths)]
        rows = [
            [*(str(v) for v in c.values), *(format_stat(*c.stats(f"eval/{n}/{name}")) for n in lengths)]
            for c in self.cells
            if c.finished
        ]
        return markdown_table(header, rows)

    def problems(self) -> list[tuple[Run, str]]:
        listed = []
        for run in self.runs:
            if run.finished:
                continue
            if run.error:
                status = f"failed: {run.error}"
            elif self.state.running:
                status = "running or queued"
            else:
                status = f"unfinished (killed or crashed; see {run.directory.name}/train.log)"
            listed.append((run, status))
        return listed

    def markdown(self) -> str:
        parts = [f"# Sweep report: {self.sweep_dir}", ""]
        if self.state.partial:
            parts += [f"**PARTIAL REPORT** ({self.state.note})", ""]
        else:
            parts += [f"Status: {self.state.note}", ""]
        grouping = ", ".join(self.keys) or "nothing (every run has the same overrides)"
        parts += [
            f"Grouped by {grouping}; metrics are mean ± sample std over the finished runs of a cell (`runs`), "
            "replicates (seeds) averaged.",
            "",
            self.cell_table(),
            "",
        ]
        if self.constant:
            parts += ["Equal in every run: " + ", ".join(f"{k}={v:.4g}" for k, v in self.constant.items()), ""]
        if (lengths := self.length_table()) is not None:
            parts += [f"## {self.eval_metric()} by evaluation length", "", lengths, ""]
        if problems := self.problems():
            parts += ["## Failed or unfinished runs", ""]
            rows = [
                [run.directory.name, " ".join(f"{k}={v}" for k, v in run.overrides.items()), status]
                for run, status in problems
            ]
            parts += [markdown_table(["job", "overrides", "status"], rows), ""]
        if self.plots:
            parts += ["## Plots", ""]
            parts += [f"![{p.stem}]({p.relative_to(self.sweep_dir)})" for p in self.plots] + [""]
        return "\n".join(parts)

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(
                [*self.keys, "runs", "missing", *(f"{m}_{s}" for m in self.metrics for s in ("mean", "std"))]
            )
            for cell in self.cells:
                stats = [cell.stats(m) for m in self.metrics]
                writer.writerow(
                    [
                        *("" if v is None else v for v in cell.values),
                        len(cell.finished),
                        len(cell.runs) - len(cell.finished),
                        *(x for mean, std, n in stats for x in (("", "") if n == 0 else (mean, std))),
                    ]
                )


def build_report(sweep_dir: Path) -> Report:
    runs = load_runs(sweep_dir)
    keys = [k for k in swept_keys(runs) if not is_replicate_key(k)]
    metrics = metric_names(runs)
    top_level = [m for m in metrics if "/" not in m]
    shown = [m for m in top_level if varying(runs, m)]
    finished = [r for r in runs if r.finished]
    constant = {m: finished[0].metrics[m] for m in top_level if m not in shown and m in finished[0].metrics}
    return Report(
        sweep_dir, runs, keys, group_cells(runs, keys), sweep_state(sweep_dir, runs), metrics, shown, constant
    )


def _errorbar_lines(axes: Any, lines: dict[str, list[tuple[float, float, float]]]) -> None:
    for label, points in lines.items():
        points.sort()
        xs, means, stds = zip(*points, strict=True)
        axes.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)


def position_perplexity_plot(cells: list[Cell], keys: list[str], out: Path, bins: int = 32) -> Path | None:
    """``<out>/ppl_by_position.png`` for language-model runs: per cell, the perplexity by position inside the
    longest evaluation window, from the loss at each position (``metrics.json`` key ``position_loss``) averaged
    over the cell's finished runs (seeds), then over ``bins`` runs of positions
    (:func:`posenc_exp.perplexity.draw_position_perplexity`); ``None`` if no run wrote one."""
    from posenc_exp.perplexity import POSITION_LOSS, draw_position_perplexity

    curves, train_length = {}, None
    for cell in cells:
        payloads = [json.loads((run.directory / METRICS_FILE).read_text()) for run in cell.finished]
        found = [p[POSITION_LOSS] | {"train_length": p["train_length"]} for p in payloads if POSITION_LOSS in p]
        if not found:
            continue
        length = max(curve["length"] for curve in found)
        losses = [curve["loss"] for curve in found if curve["length"] == length]
        label = f"{cell.label(keys)} ({len(losses)} run{'s' if len(losses) != 1 else ''})"
        curves[label] = [sum(values) / len(values) for values in zip(*losses, strict=True)]
        train_length = found[0]["train_length"]
    if not curves:
        return None
    figure, axes = grid(1, width=7, height=4.5)
    draw_position_perplexity(axes[0], curves, train_length, bins)
    return save(figure, out / "ppl_by_position.png")


def draw_plots(report: Report) -> list[Path]:
    """PNG plots into ``<sweep dir>/plots`` (see the module docstring); returns their paths."""
    finished_cells = [c for c in report.cells if c.finished]
    if not finished_cells:
        return []
    out = report.sweep_dir / PLOT_DIR
    out.mkdir(exist_ok=True)
    paths = []
    numeric = [i for i, k in enumerate(report.keys) if all(isinstance(c.values[i], int | float) for c in report.cells)]
    for i in numeric if report.shown else []:
        key = report.keys[i]
        others = [j for j in range(len(report.keys)) if j != i]
        figure, axes = grid(len(report.shown))
        for ax, metric in zip(axes, report.shown, strict=True):
            lines: dict[str, list[tuple[float, float, float]]] = {}
            for cell in finished_cells:
                mean, std, n = cell.stats(metric)
                label = ", ".join(f"{report.keys[j]}={cell.values[j]}" for j in others) or metric
                if n:
                    lines.setdefault(label, []).append((cell.values[i], mean, std))
            _errorbar_lines(ax, lines)
            xs = [c.values[i] for c in finished_cells]
            if min(xs) > 0 and max(xs) / min(xs) >= 100:
                ax.set_xscale("log")
            ax.set(xlabel=key, ylabel=metric, title=f"{metric} vs {key}")
            if others:
                ax.legend(fontsize="small")
        paths.append(save(figure, out / f"vs_{key.replace('/', '_')}.png"))
    if not numeric and report.keys and report.shown:
        figure, axes = grid(len(report.shown))
        labels = [c.label(report.keys) for c in finished_cells]
        for ax, metric in zip(axes, report.shown, strict=True):
            stats = [c.stats(metric) for c in finished_cells]
            ax.bar(range(len(stats)), [s[0] for s in stats], yerr=[s[1] for s in stats], capsize=3)
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize="small")
            ax.set(ylabel=metric, title=metric)
        paths.append(save(figure, out / "by_cell.png"))
    lengths = report.eval_lengths()
    if len(lengths) > 1:
        names = list(dict.fromkeys(m.split("/")[2] for m in report.metrics if m.startswith("eval/")))
        names.sort(key=lambda name: ("acc", "seq_acc").index(name) if name in ("acc", "seq_acc") else 2)
        figure, axes = grid(len(names))
        for ax, name in zip(axes, names, strict=True):
            lines = {}
            for cell in finished_cells:
                points = [(n, *cell.stats(f"eval/{n}/{name}")) for n in lengths]
                lines[cell.label(report.keys)] = [(n, mean, std) for n, mean, std, count in points if count]
            _errorbar_lines(ax, {k: v for k, v in lines.items() if v})
            ax.set_xscale("log", base=2)
            ax.set_xticks(lengths, [str(n) for n in lengths], minor=False)
            ax.minorticks_off()
            ax.set(xlabel="evaluation length", ylabel=name, title=f"{name} vs evaluation length")
            ax.legend(fontsize="small")
        paths.append(save(figure, out / "eval_vs_length.png"))
    if (curve := position_perplexity_plot(finished_cells, report.keys, out)) is not None:
        paths.append(curve)
    return paths


def write_report(sweep_dir: Path) -> Report:
    """Build the report, draw its plots, write ``report.md`` and ``report.csv`` into ``sweep_dir``."""
    report = build_report(sweep_dir)
    report.plots = draw_plots(report)
    (sweep_dir / "report.md").write_text(report.markdown())
    report.write_csv(sweep_dir / "report.csv")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m posenc_exp.analysis.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory, e.g. outputs/multiruns/<time>")
    args = parser.parse_args(argv)
    sweep_dir: Path = args.sweep_dir
    if not sweep_dir.is_dir():
        print(
            f"error: sweep_dir={sweep_dir} is not a directory: expected e.g. outputs/multiruns/<time>", file=sys.stderr
        )
        sys.exit(2)
    if not any(sweep_dir.glob("**/.hydra/overrides.yaml")):
        print(f"error: {sweep_dir} holds no runs: expected job directories with .hydra/overrides.yaml", file=sys.stderr)
        sys.exit(1)
    report = write_report(sweep_dir)
    print(report.markdown())
    print(f"wrote {sweep_dir / 'report.md'}, {sweep_dir / 'report.csv'} and {len(report.plots)} plot(s)")
    if report.state.partial:
        print(f"PARTIAL report: {report.state.note}")


if __name__ == "__main__":
    main()
