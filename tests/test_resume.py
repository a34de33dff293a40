"""Resuming as users expect (issue 8): a changed ``optimizer.lr`` is used, the best checkpoint is still tracked
in a new run directory, another experiment's checkpoint is refused, and a loss that diverges before any
checkpoint was written says so. Real CLI runs of the default model, read back from their files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import read_events, read_metrics, train_run

pytestmark = pytest.mark.slow


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def val_losses(run_dir: Path) -> dict[int, float]:
    return {event.step: event.value for event in read_events(run_dir).Scalars("val/loss")}


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("resume") / "first"
    train_run(run_dir, "trainer.max_epochs=2")
    return run_dir


def test_resume_into_a_new_directory_uses_the_new_lr_and_keeps_the_best_checkpoint(
    two_epochs: Path, tmp_path: Path
) -> None:
    """Resumed for a third epoch at a learning rate 100x the first run's: the optimizer runs at the new rate (the
    checkpoint used to restore the old one), and the best checkpoint is the best of all three epochs, copied
    into the new directory (the new directory used to forget the first run's best score)."""
    before = sorted(p.name for p in (two_epochs / "checkpoints").iterdir())
    resumed = tmp_path / "resumed"
    train_run(resumed, "trainer.max_epochs=3", "optimizer.lr=0.5", f"ckpt_path={two_epochs / 'checkpoints/last.ckpt'}")
    last = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2
    assert {group["lr"] for state in last["optimizer_states"] for group in state["param_groups"]} == {0.5}
    losses = val_losses(two_epochs) | val_losses(resumed)
    assert sorted(losses) == [0, 1, 2]
    best_epoch = min(losses, key=losses.get)
    best = sorted((resumed / "checkpoints").glob("best*.ckpt"))
    assert [torch.load(p, map_location="cpu", weights_only=True)["epoch"] for p in best] == [best_epoch]
    assert read_metrics(resumed)["best_val_loss"] == pytest.approx(losses[best_epoch])
    assert sorted(p.name for p in (two_epochs / "checkpoints").iterdir()) == before  # the first run is untouched


@pytest.mark.parametrize(
    ("override", "key"),
    [("model.n_hidden=8", "model.n_hidden"), ("encoding=sinusoidal", "encoding._target_"), ("data=lag", "data")],
)
def test_another_experiments_checkpoint_is_refused_naming_what_differs(
    two_epochs: Path, tmp_path: Path, override: str, key: str
) -> None:
    extra = ["data.eval_factors=[1.0]"] if override == "data=lag" else []
    run_dir = tmp_path / "run"
    result = train_run(run_dir, override, *extra, f"ckpt_path={two_epochs / 'checkpoints/last.ckpt'}", check=False)
    errors = error_lines(result.stderr)
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert "another experiment's checkpoint" in errors[0] and key in errors[0]
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()  # refused before anything was written


def test_a_loss_that_diverges_in_the_first_epoch_does_not_claim_a_kept_checkpoint(tmp_path: Path) -> None:
    """At lr 1e30 the first Adam step makes the weights about 1e30, and the next forward pass sums products of
    about 1e60: inf - inf = NaN within the first epoch, before any checkpoint."""
    run_dir = tmp_path / "run"
    result = train_run(run_dir, "optimizer.lr=1e30", check=False)
    errors = error_lines(result.stderr)
    assert result.returncode == 1 and len(errors) == 1, result.stderr[-2000:]
    assert "non-finite at epoch 0" in errors[0] and "no checkpoint was written" in errors[0]
    assert not list(run_dir.rglob("*.ckpt"))


def test_a_later_divergence_names_the_checkpoint_to_resume_from(tmp_path: Path) -> None:
    """One optimizer step per epoch at lr 1e12: a few epochs in, the loss overflows; the message names last.ckpt,
    which exists, and resuming from it with a lower rate trains on."""
    run_dir = tmp_path / "run"
    result = train_run(run_dir, "optimizer.lr=1e12", "data.batch_size=1000", "trainer.max_epochs=50", check=False)
    errors = error_lines(result.stderr)
    assert result.returncode == 1 and len(errors) == 1, result.stderr[-2000:]
    kept = errors[0].split("ckpt_path=")[1]
    assert Path(kept).is_file()
    resumed = tmp_path / "resumed"
    epoch = torch.load(kept, map_location="cpu", weights_only=True)["epoch"]
    train_run(
        resumed, f"trainer.max_epochs={epoch + 2}", "optimizer.lr=1e-3", "data.batch_size=1000", f"ckpt_path={kept}"
    )
    assert read_metrics(resumed)["epochs"] == epoch + 2
