"""Shared fixtures: real CLI runs and sweeps that several test modules read (helpers live in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SMALL_SWEEP, run_cli, train_run


@pytest.fixture(scope="session")
def seed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real default-config CLI run (3 epochs), shared by the tests that read a run directory.

    Its console output is kept next to it, in `console.txt` (stdout) and `console_err.txt` (stderr)."""
    run_dir = tmp_path_factory.mktemp("seed_run") / "run"
    result = train_run(run_dir)
    (run_dir.parent / "console.txt").write_text(result.stdout)
    (run_dir.parent / "console_err.txt").write_text(result.stderr)
    return run_dir


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep directory of SMALL_SWEEP; its console output is kept beside it in `console.txt`."""
    sweep_dir = tmp_path_factory.mktemp("small_sweep") / "sweep"
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    result = run_cli("-m", *launcher, *SMALL_SWEEP, f"hydra.sweep.dir={sweep_dir}")
    (sweep_dir.parent / "console.txt").write_text(result.stdout + result.stderr)
    return sweep_dir
