"""Distributed training on CPU: ``trainer=ddp_cpu`` (2 processes, gloo) against one process on the same
global batch. ``ChunkedBatches`` gives rank r the mini-batches r, r + 2, ...; with 72 training samples,
4 per rank and 8 in one process, both see the same 9 global batches per epoch, no remainder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import read_events, read_metrics, run_cli

TINY = ["trainer.max_epochs=2", "callbacks.progress_bar=null"]


@pytest.fixture(scope="module")
def ddp_and_single(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A 2-process DDP run (batch 4 per rank) and a single-process run (batch 8); the DDP run's stdout."""
    root = tmp_path_factory.mktemp("ddp")
    ddp = run_cli(*TINY, "trainer=ddp_cpu", "data.batch_size=4", f"hydra.run.dir={root / 'ddp'}")
    run_cli(*TINY, "data.batch_size=8", f"hydra.run.dir={root / 'single'}")
    return root / "ddp", root / "single", ddp.stdout


def relative_files(run_dir: Path) -> set[str]:
    """The run's files, event files under one name (theirs carries a time stamp, host and pid)."""
    return {"events" if p.name.startswith("events.out") else str(p.relative_to(run_dir)) for p in run_dir.rglob("*")}


@pytest.mark.slow
def test_ddp_cpu_matches_one_process_on_the_same_global_batch(ddp_and_single: tuple[Path, Path, str]) -> None:
    ddp_dir, single_dir, _ = ddp_and_single
    ddp, single = read_metrics(ddp_dir), read_metrics(single_dir)
    assert ddp["optimizer_steps"] == single["optimizer_steps"] == 18
    for key in ("train_loss", "val_loss", "best_val_loss"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-5), key
    np.testing.assert_allclose(ddp["encoding_final"], single["encoding_final"], atol=1e-5)
    ddp_events, single_events = read_events(ddp_dir), read_events(single_dir)
    for tag in ("train/loss", "val/loss"):
        ddp_series, single_series = ddp_events.Scalars(tag), single_events.Scalars(tag)
        assert [e.step for e in ddp_series] == [e.step for e in single_series]
        np.testing.assert_allclose([e.value for e in ddp_series], [e.value for e in single_series], atol=1e-5)


@pytest.mark.slow
def test_ddp_rank_zero_alone_writes(ddp_and_single: tuple[Path, Path, str]) -> None:
    ddp_dir, single_dir, stdout = ddp_and_single
    # Rank 1 writes nothing but its log, and that only once it logs something (the file handler is delayed).
    assert relative_files(ddp_dir) - relative_files(single_dir) <= {"train_ddp_process_1.log"}, "rank 1: its log only"
    assert len(list(ddp_dir.glob("events.out*"))) == 1
    assert stdout.count("val_loss=") == 1, "the summary is printed once"
    events, single_events = read_events(ddp_dir), read_events(single_dir)
    assert [e.step for e in events.Histograms("view/encoding/values")] == [0, 1], "one snapshot per epoch"
    assert events.Tags()["scalars"] == single_events.Tags()["scalars"]
    for tag in events.Tags()["scalars"]:
        steps = [e.step for e in events.Scalars(tag)]
        assert steps == [e.step for e in single_events.Scalars(tag)], f"{tag}: written as often as in one process"


@pytest.mark.slow
def test_ddp_inside_multirun_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_cli("-m", *TINY, "trainer=ddp_cpu", "seed=0", f"hydra.sweep.dir={sweep_dir}")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "trainer.strategy=ddp is not allowed inside -m" in errors[0]
    assert "submitit_slurm" in errors[0]
    job = sweep_dir / "0"
    assert (job / "error.txt").exists() and not (job / "metrics.json").exists()
    assert not (job / "checkpoints").exists() and not list(job.glob("events.out*"))


@pytest.mark.slow
def test_ddp_cpu_replicas_match_one_process(tmp_path: Path) -> None:
    """Each replica's values, averaged over the ranks, are those of one process on the same global batch."""
    run_cli(*TINY, "replicas=2", "trainer=ddp_cpu", "data.batch_size=4", f"hydra.run.dir={tmp_path / 'ddp'}")
    run_cli(*TINY, "replicas=2", "data.batch_size=8", f"hydra.run.dir={tmp_path / 'single'}")
    for k in range(2):
        ddp_dir, single_dir = tmp_path / "ddp" / f"replica_{k}", tmp_path / "single" / f"replica_{k}"
        ddp, single = read_metrics(ddp_dir), read_metrics(single_dir)
        for key in ("train_loss", "val_loss"):
            assert ddp[key] == pytest.approx(single[key], abs=1e-5), (k, key)
        ddp_events, single_events = read_events(ddp_dir), read_events(single_dir)
        for tag in ("train/loss", "val/loss"):
            ddp_series, single_series = ddp_events.Scalars(tag), single_events.Scalars(tag)
            assert [e.step for e in ddp_series] == [e.step for e in single_series] == [0, 1]
            np.testing.assert_allclose([e.value for e in ddp_series], [e.value for e in single_series], atol=1e-5)
