"""What makes a single run fast keeps its results: optimizer steps without Lightning's per-step wrappers are
bit-identical to the wrapped ones; last.ckpt every ``every_n_epochs`` epochs and at the last; encoding images
every ``image_every_n_epochs`` epochs and at the last, histograms every epoch; validation every
``check_val_every_n_epoch`` epochs and at the last (docs/speed.md); one replica's loss is the per-replica
mean bit for bit; and that ``bench replicas`` and ``bench overhead --hooks`` run."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import fast_in_process, read_events, read_metrics, train_run
from omegaconf import OmegaConf

from posenc_exp.bench import overhead as bench_overhead
from posenc_exp.bench import replicas as bench_replicas
from posenc_exp.config import compose_train
from posenc_exp.module import PosEncModule
from posenc_exp.train import build


class BackwardCounter(L.Callback):
    """A callback on a per-step hook: the steps must then go through Lightning's wrappers, which call it."""

    def __init__(self) -> None:
        self.calls = 0

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.calls += 1


def fit(tmp_path: Path, *callbacks: L.Callback) -> tuple[dict[str, torch.Tensor], L.Trainer, bool]:
    cfg = fast_in_process(tmp_path, "trainer.max_epochs=2", "data.batch_size=1", "data.chunk_steps=16")
    datamodule, module, trainer = build(cfg)
    trainer.callbacks.extend(callbacks)
    trainer.fit(module, datamodule=datamodule)
    return module.state_dict(), trainer, module.plain_steps()


def test_plain_steps_are_the_wrapped_steps_bit_for_bit(tmp_path: Path) -> None:
    plain, plain_trainer, was_plain = fit(tmp_path / "plain")
    counter = BackwardCounter()
    wrapped, wrapped_trainer, was_wrapped_plain = fit(tmp_path / "wrapped", counter)
    assert was_plain and not was_wrapped_plain
    assert counter.calls == wrapped_trainer.global_step == plain_trainer.global_step == 2 * 72  # batch 1
    for name, tensor in plain.items():
        assert torch.equal(tensor, wrapped[name]), name


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 8, 1), (1, 5, 1), (1, 7, 3), (1, 64, 32)])
def test_one_replicas_step_loss_is_the_per_replica_mean_bit_for_bit(shape: tuple[int, ...]) -> None:
    """One replica's MSE is ``mse_loss``'s fused mean, 0-d (``PosEncModule.step_loss``): the value and the
    gradient of the per-replica mean that more replicas use, bit for bit; ``loss`` gives it the replica axis."""
    module = PosEncModule(net=OmegaConf.to_container(compose_train().model, resolve=True), optimizer={})
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        prediction, target = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
        fused, reference = prediction.clone().requires_grad_(), prediction.clone().requires_grad_()
        step_loss = module.step_loss(fused, target)
        per_replica = torch.nn.functional.mse_loss(reference, target, reduction="none").flatten(1).mean(dim=1)
        assert step_loss.shape == () and module.loss(fused, target).shape == (1,)
        assert torch.equal(step_loss.view(1), per_replica)
        step_loss.backward()
        per_replica.backward(torch.ones(1))
        assert torch.equal(fused.grad, reference.grad)


class LastCheckpointEpochs(L.Callback):
    """At the start of each epoch, the epoch that ``last.ckpt`` holds (None before it exists)."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        exists = self.path.is_file()
        self.seen.append(torch.load(self.path, weights_only=True)["epoch"] if exists else None)


def test_last_checkpoint_every_n_epochs_and_at_the_last(tmp_path: Path) -> None:
    no_logging = ["~logger", "callbacks.encoding_snapshot=null", "callbacks.progress_bar=null"]
    no_logging += ["callbacks.model_checkpoint=null", "trainer.enable_progress_bar=false"]
    every_4 = ["trainer.max_epochs=6", "data.batch_size=1000", "callbacks.last_checkpoint.every_n_epochs=4"]
    cfg = compose_train([*no_logging, f"paths.output_dir={tmp_path}", *every_4])
    datamodule, module, trainer = build(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"
    recorder = LastCheckpointEpochs(last)
    trainer.callbacks.append(recorder)
    trainer.fit(module, datamodule=datamodule)
    assert recorder.seen == [None, None, None, None, 3, 3]  # saved after epoch 3 (the 4th)
    assert torch.load(last, weights_only=True)["epoch"] == 5  # and after the last, though not a 4th


def test_images_every_n_epochs_and_at_the_last_histograms_every_epoch(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train_run(run_dir, "trainer.max_epochs=13", "data.batch_size=1000")
    events = read_events(run_dir)
    assert [e.step for e in events.Histograms("view/encoding/values")] == list(range(13))
    assert [e.step for e in events.Scalars("encoding/distance_from_init")] == list(range(13))
    assert [e.step for e in events.Images("view/encoding/history")] == [0, 10, 12]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 12


def test_validation_every_n_epochs_and_at_the_last(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train_run(run_dir, "trainer.max_epochs=13", "trainer.check_val_every_n_epoch=5", "data.batch_size=1000")
    losses = read_events(run_dir).Scalars("val/loss")
    assert [e.step for e in losses] == [4, 9, 12]  # Lightning's multiples of 5, and the last epoch
    assert read_metrics(run_dir)["val_loss"] == pytest.approx(losses[-1].value)  # the final model's
    best = min(losses, key=lambda e: e.value)
    assert [p.name for p in (run_dir / "checkpoints").glob("best-*")] == [f"best-epoch{best.step:04d}.ckpt"]


def test_bench_replicas_times_steps_and_whole_runs(capsys: pytest.CaptureFixture[str]) -> None:
    bench_replicas.main(
        ["--models", "toy", "--replicas", "2", "--steps", "2", "--warmup", "1", "--repeats", "1", "--whole-run", "2"]
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["toy"]["ratio_to_one"]) == set(result["whole_run"]["ratio_to_one"]) == {"1", "2"}
    assert result["whole_run"]["ratio_to_one"]["1"] == 1.0 and result["whole_run"]["ms_per_epoch"]["2"] > 0


def test_bench_overhead_hooks_account_for_the_whole_fit(capsys: pytest.CaptureFixture[str]) -> None:
    bench_overhead.main(["--hooks", "--epochs-bs1", "2", "--repeats", "1"])
    times = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ms_per_epoch"]
    assert {"fit", "raw loop", "module.training_step", "EncodingSnapshot.on_train_epoch_end"} <= set(times)
    # what is left of the fit outside the outermost hooks (none counted twice) is positive
    assert 0 < times["elsewhere"] < times["fit"] and times["module.training_step"] > 0


def test_values_reach_tensorboard_at_the_epoch_and_callbacks_what_they_monitor(tmp_path: Path) -> None:
    """The module writes every value once per epoch, at the epoch as step, to TensorBoard and ``module.logged``;
    ``trainer.callback_metrics`` holds what callbacks monitor: ``val/loss`` (the best checkpoint's), and a
    per-length value once an early-stopping callback watches it."""
    from lightning.pytorch.callbacks import EarlyStopping

    cfg = compose_train(["trainer.max_epochs=3", "callbacks.progress_bar=null", f"paths.output_dir={tmp_path}"])
    datamodule, module, trainer = build(cfg)
    trainer.callbacks.append(EarlyStopping(monitor="val/loss_gap@len=10", patience=100))
    trainer.fit(module, datamodule=datamodule)
    assert set(trainer.callback_metrics) == {"val/loss", "val/loss_gap@len=10"}
    assert trainer.callback_metrics["val/loss"].item() == pytest.approx(module.logged["val/loss"], rel=1e-6)
    events = read_events(tmp_path)
    for tag in ("train/loss", "val/loss", "val/loss_gap", "val/loss@len=10", "val/loss_gap@len=10"):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [0, 1, 2], tag
        assert scalars[-1].value == pytest.approx(module.logged[tag], rel=1e-6), tag
    assert "epoch" not in events.Tags()["scalars"]  # Lightning's own x-axis helper is not written


def test_progress_bar_draws_no_bar_for_the_validation_passes_of_fit(tmp_path: Path) -> None:
    import contextlib
    import io

    from posenc_exp.callbacks import ProgressBar

    cfg = compose_train(["trainer.max_epochs=2", "~logger", f"paths.output_dir={tmp_path}"])  # the default bar
    datamodule, module, trainer = build(cfg)
    assert [type(c) for c in trainer.callbacks if isinstance(c, L.pytorch.callbacks.ProgressBar)] == [ProgressBar]
    during_fit, after_fit = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(during_fit):
        trainer.fit(module, datamodule=datamodule)
    with contextlib.redirect_stdout(after_fit):
        trainer.validate(module, datamodule=datamodule, verbose=False)  # outside fit: Lightning's bar
    assert "Epoch 1" in during_fit.getvalue()
    assert "Validation" not in during_fit.getvalue()
    assert "Validation DataLoader 0" in after_fit.getvalue()


def test_chunk_count_is_what_an_epoch_yields() -> None:
    """``len(loader)``, which Lightning asks at every epoch, is counted without building the epoch's batches."""
    from posenc_exp.data.base import ChunkedBatches

    for n, batch_size, chunk_steps in [(72, 1, 128), (72, 1, 64), (72, 5, 4), (90, 8, 3), (7, 8, 1), (100, 3, 7)]:
        loader = ChunkedBatches(torch.zeros(2, n, 3), torch.zeros(2, n), batch_size, chunk_steps)
        assert len(loader) == len(list(loader)), (n, batch_size, chunk_steps)
