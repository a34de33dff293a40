"""The sweep report on a real small sweep: its cells, mean ± std, failed runs, plots and the partial mark."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import read_metrics, run_cli
from omegaconf import OmegaConf

from posenc_exp.analysis.report import build_report, expected_jobs, write_report
from posenc_exp.rundir import STATUS_FILE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def sweep_copy(small_sweep: Path, tmp_path: Path) -> Path:
    """A copy of the shared small sweep that a test may change."""
    return Path(shutil.copytree(small_sweep, tmp_path / "sweep"))


def val_losses_by_cell(sweep_dir: Path) -> dict[tuple[str, str], list[float]]:
    """The finished runs' val_loss straight from their metrics.json, by (encoding, model.n_hidden)."""
    cells: dict[tuple[str, str], list[float]] = {}
    for overrides_file in sweep_dir.glob("*/.hydra/overrides.yaml"):
        overrides = dict(o.split("=", 1) for o in OmegaConf.load(overrides_file))
        job = overrides_file.parent.parent
        if (job / "metrics.json").exists():
            cells.setdefault((overrides["encoding"], overrides["model.n_hidden"]), []).append(
                read_metrics(job)["val_loss"]
            )
    return cells


@pytest.mark.slow
def test_report_of_a_real_sweep(sweep_copy: Path) -> None:
    result = run_cli(str(sweep_copy), module="posenc_exp.analysis.report")

    rows = list(csv.DictReader((sweep_copy / "report.csv").open()))
    cells = [(row["encoding"], row["model.n_hidden"]) for row in rows]
    assert cells == [(e, w) for e in ("learned", "none") for w in ("0", "4", "8")], "seeds averaged, not grouped"
    expected = val_losses_by_cell(sweep_copy)
    markdown = (sweep_copy / "report.md").read_text()
    for row, cell in zip(rows, cells, strict=True):
        if cell[1] == "0":
            assert (row["runs"], row["missing"], row["val_loss_mean"]) == ("0", "2", "")
            continue
        losses = expected[cell]
        assert (row["runs"], row["missing"]) == ("2", "0")
        assert float(row["val_loss_mean"]) == pytest.approx(statistics.fmean(losses))
        assert float(row["val_loss_std"]) == pytest.approx(statistics.stdev(losses))
        shown = f"{statistics.fmean(losses):.4g} ± {statistics.stdev(losses):.2g}"
        assert shown in markdown and shown in result.stdout
    assert markdown.count("failed: model.n_hidden=0 is not allowed") == 4
    assert "PARTIAL" not in markdown and "finished: 8 of 12 jobs finished" in markdown
    plot = sweep_copy / "plots" / "vs_model.n_hidden.png"
    assert plot.read_bytes().startswith(PNG_MAGIC) and f"]({plot.relative_to(sweep_copy)})" in markdown
    assert not (sweep_copy / "plots" / "eval_vs_length.png").exists(), "one evaluation length: no length plot"


@pytest.mark.slow
def test_report_is_partial_while_the_sweep_runs_or_after_it_stopped(sweep_copy: Path) -> None:
    assert expected_jobs(sweep_copy) == 12
    status = {"state": "running", "pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
    (sweep_copy / STATUS_FILE).write_text(json.dumps(status))
    unfinished = sweep_copy / "3"
    (unfinished / "metrics.json").unlink()

    report = build_report(sweep_copy)
    assert report.state.partial and "still running" in report.state.note
    assert report.markdown().startswith(f"# Sweep report: {sweep_copy}\n\n**PARTIAL REPORT**")
    assert ("3", "running or queued") in [(run.directory.name, status) for run, status in report.problems()]

    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (sweep_copy / STATUS_FILE).write_text(json.dumps({**status, "pid": int(exited.stdout)}))
    report = build_report(sweep_copy)
    assert report.state.partial and "stopped before finishing: 7 of 12" in report.state.note
    assert "unfinished" in dict((run.directory.name, status) for run, status in report.problems())["3"]

    (sweep_copy / STATUS_FILE).unlink()  # no marker: recent activity decides
    for path in [unfinished, *unfinished.rglob("*")]:
        os.utime(path)  # changed just now (the shared sweep may have been made long before this test)
    assert build_report(sweep_copy).state.partial
    old = time.time() - 3600
    for path in [unfinished, *unfinished.rglob("*")]:
        os.utime(path, (old, old))
    assert not build_report(sweep_copy).state.partial


@pytest.mark.slow
def test_accuracy_against_evaluation_length(sweep_copy: Path) -> None:
    """Runs evaluated at several lengths (here the real runs' metrics.json given a per-length block, as the
    token tasks write it) get a length table and an accuracy-vs-length plot, one line per cell."""
    for metrics_file in sweep_copy.glob("*/metrics.json"):
        metrics = json.loads(metrics_file.read_text())
        base = metrics["val_loss"]
        metrics["eval"] = {str(n): {"loss": base * n, "acc": 1 / n, "seq_acc": base / n} for n in (10, 20, 40)}
        metrics_file.write_text(json.dumps(metrics))

    report = write_report(sweep_copy)

    assert report.eval_lengths() == [10, 20, 40] and report.eval_metric() == "acc"
    markdown = (sweep_copy / "report.md").read_text()
    assert "## acc by evaluation length" in markdown and "| acc@10 | acc@20 | acc@40 |" in markdown
    assert "| none | 4 | 0.1 ± 0 | 0.05 ± 0 | 0.025 ± 0 |" in markdown, "the same in both seeds"
    assert (sweep_copy / "plots" / "eval_vs_length.png").read_bytes().startswith(PNG_MAGIC)
    header = next(csv.reader((sweep_copy / "report.csv").open()))
    assert {"eval/20/acc_mean", "eval/20/acc_std", "eval/40/seq_acc_mean"} <= set(header)


@pytest.mark.slow
def test_report_of_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "posenc_exp.analysis.report", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: sweep_dir=")
