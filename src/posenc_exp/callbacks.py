"""Callbacks that log what the encodings do to TensorBoard."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from posenc_exp.encodings import PositionalEncoding, replica_of
from posenc_exp.images import labelled_heatmaps, snapshot_images, write_image
from posenc_exp.loggers import replica_writers
from posenc_exp.models import AttentionStack

# The TensorBoard group of every image and histogram: Time Series sorts its cards by tag, so under this name
# they come after the scalars of train/ and val/ (the losses) instead of above them.
VIEW = "view"


class EncodingSnapshot(L.Callback):
    """At the end of training epochs, log what ``net.encoding`` looks like, whatever its family.

    Through the encoding's own snapshot methods (see ``posenc_exp.encodings``), under the ``view/`` group
    (:data:`VIEW`) that TensorBoard's Time Series lists after the losses:

    - ``view/encoding/<name>`` histograms from ``snapshot_histograms()``: the table's entries as
      ``view/encoding/values`` (learned, sinusoidal, t5), ``view/encoding/log10_frequency`` for RoPE;
    - ``view/encoding/<name>`` images of ``snapshot_maps()``, rendered by ``posenc_exp.images``: ``table``
      (position x dimension) and ``cosine_similarity`` (between positions) for tables, ``bias`` (each head's
      bias over n x n positions, side by side) for ALiBi and T5, ``rotation`` (``cos(m theta_i)``, position x
      frequency) for RoPE; nothing for NoPE.

    and, for a trainable encoding with a ``snapshot()`` tensor ``P`` (learned, learnable sinusoidal, t5):

    - ``encoding/distance_from_init``: ``||P_e - P_0||_F``, the Frobenius distance from the initial value;
    - ``view/encoding/history``: an image, row of ``P`` (position, or T5 bucket) x epoch (columns), of each
      row's value (its mean when ``P`` is wider than one), on a diverging scale around 0, with tick labels and
      a colour bar; ``history_pixels`` (height, width) whatever the number of epochs.

    Histograms use numpy's ``bins="auto"``: a few wide bins for the seed's 10 values instead of spikes.

    The histograms and the distance are logged every epoch; the images (about 8 ms each to draw and encode as
    PNG, half a tiny model's epoch) every ``image_every_n_epochs`` epochs (epochs 0, n, 2n, ...) and at the end of
    training, so the last image shows the final encoding and the history has every epoch's column. (TensorBoard
    shows 10 images per tag by default anyway; ``--samples_per_plugin images=0`` shows them all.)

    A fixed encoding (nothing to train) is logged once, at the first epoch. With several replicas each
    replica's snapshots go to its own run (``replica_<k>/``). The per-epoch history is kept in the callback's
    state, so a resumed run continues its heatmap. Without a TensorBoardLogger (e.g. under ``fast_dev_run``)
    it does nothing.
    """

    def __init__(self, history_pixels: tuple[int, int] = (200, 300), image_every_n_epochs: int = 1) -> None:
        self.history_pixels = tuple(history_pixels)
        self.image_every_n_epochs = image_every_n_epochs
        self.history: dict[int, list[list[float]]] = {}  # replica -> per epoch, each row's value
        self.logged_fixed = False
        self.unrendered: int | None = None  # the last epoch snapshotted whose images are not written yet

    def image_epoch(self, epoch: int) -> bool:
        """Whether the images are drawn at the end of ``epoch`` (besides the end of training)."""
        return epoch % self.image_every_n_epochs == 0

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writers = replica_writers(trainer)
        encoding: PositionalEncoding = pl_module.net.encoding
        trainable = encoding.trainable
        if not writers or trainer.sanity_checking or (self.logged_fixed and not trainable):
            return
        if not trainer.is_global_zero:  # DDP: the ranks hold the same encoding; rank 0 alone writes it
            return
        step = trainer.current_epoch
        current: Tensor | None = encoding.snapshot()
        for replica, writer in writers:
            for name, values in encoding.snapshot_histograms(replica).items():
                writer.add_histogram(f"{VIEW}/encoding/{name}", values, step, bins="auto")
            if not trainable or current is None:
                continue
            own = replica_of(current, replica)
            distance = (own - replica_of(pl_module.encoding_initial, replica)).norm().item()
            writer.add_scalar("encoding/distance_from_init", distance, step)
            self.history.setdefault(replica, []).append(own.reshape(len(own), -1).mean(dim=1).tolist())
        self.unrendered = step
        if not trainable or self.image_epoch(step):
            self.write_images(writers, encoding, step)
        self.logged_fixed = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The images of the last epoch, when its epoch was not one that draws them."""
        writers = replica_writers(trainer)
        if writers and trainer.is_global_zero and self.unrendered is not None:
            self.write_images(writers, pl_module.net.encoding, self.unrendered)

    def write_images(self, writers: list[tuple[int, Any]], encoding: PositionalEncoding, step: int) -> None:
        """Each replica's images of ``encoding`` (``snapshot_images``) and its history, at ``step``."""
        for replica, writer in writers:
            for name, image in snapshot_images(encoding, replica).items():
                write_image(writer, f"{VIEW}/encoding/{name}", image, step)
            if replica in self.history:
                history = np.array(self.history[replica]).T
                image = labelled_heatmaps([history], encoding.snapshot_rows, "epoch", size=self.history_pixels)
                write_image(writer, f"{VIEW}/encoding/history", image, step)
        self.unrendered = None

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {int(k): list(v) for k, v in state_dict["history"].items()}


class ProgressBar(TQDMProgressBar):
    """Lightning's ``TQDMProgressBar`` without a bar of its own for the validation passes of ``fit``.

    A pass is one batch per evaluation length, over in milliseconds: its bar, made, redrawn and closed at every
    epoch, cost about a millisecond of a tiny model's epoch and left a line per pass in logs. The epoch's bar
    still shows the metrics after each validation; sanity checks and ``trainer.validate`` keep Lightning's bar.
    """

    @staticmethod
    def in_fit(trainer: L.Trainer) -> bool:
        return trainer.state.fn == "fit" and not trainer.sanity_checking

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.in_fit(trainer):
            super().on_validation_start(trainer, pl_module)

    def on_validation_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if not self.in_fit(trainer):
            super().on_validation_batch_start(trainer, *args, **kwargs)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if not self.in_fit(trainer):
            super().on_validation_batch_end(trainer, *args, **kwargs)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.in_fit(trainer):
            super().on_validation_end(trainer, pl_module)
        else:  # the epoch's bar exists from on_train_start on
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))


class ResumableCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that keeps its tracking when a run resumes into another directory.

    Lightning restores only ``best_model_path`` when the checkpoint's ``dirpath`` differs from this run's, so a
    resumed run forgot the best score (``best_val_loss``) and took its first epoch for the best. Here the
    tracked files are carried over: a monitored callback's best checkpoints are copied into this run's
    ``dirpath`` (rank 0; the old run's files are never touched) and its scores restored, so a later epoch
    replaces the best only when it is better; the paths of an unmonitored one (``last.ckpt``) point into
    this run's ``dirpath``, where its next save writes.

    With ``every_n_epochs`` > 1 (``last.ckpt``: a crash loses at most the epochs since its last save) it also
    saves at the last epoch of ``trainer.max_epochs`` (or when the trainer is told to stop), so a finished run
    always ends with a checkpoint of its final weights.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        final = self.final_epoch(trainer)
        every = self._every_n_epochs
        if not (final or self.save_last or (every >= 1 and (trainer.current_epoch + 1) % every == 0)):
            return  # Lightning would deep-copy the logged metrics (~0.3 ms), then save nothing at this epoch
        with self.every_epoch_if(final):
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with self.every_epoch_if(self.final_epoch(trainer)):
            super().on_validation_end(trainer, pl_module)

    @staticmethod
    def final_epoch(trainer: L.Trainer) -> bool:
        last = trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch + 1
        return last or trainer.should_stop

    @contextmanager
    def every_epoch_if(self, condition: bool) -> Iterator[None]:
        """Within the block, save at this epoch whatever ``every_n_epochs`` says, if ``condition``. (Lightning's
        ``ModelCheckpoint`` keeps the setting in ``_every_n_epochs``, the value of its ``every_n_epochs``.)"""
        every = self._every_n_epochs
        if condition and every > 1:
            self._every_n_epochs = 1
        try:
            yield
        finally:
            self._every_n_epochs = every

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if old and self.dirpath and Path(old) != Path(self.dirpath):
            state_dict = self._moved(state_dict, Path(old))
        super().load_state_dict(state_dict)

    def _moved(self, state: dict[str, Any], old: Path) -> dict[str, Any]:
        new_dir = Path(self.dirpath)

        def move(path: str) -> str:
            if not path or Path(path).parent != old:
                return path
            target = new_dir / Path(path).name
            if self.monitor and Path(path).is_file() and not target.exists() and rank_zero_only.rank == 0:
                new_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
            return str(target)

        moved = {**state, "dirpath": str(new_dir)}
        moved["best_k_models"] = {move(p): score for p, score in state.get("best_k_models", {}).items()}
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            moved[key] = move(state.get(key, ""))
        return moved


class AttentionPatterns(L.Callback):
    """At the end of training epochs, log what each attention head attends to, for attention models.

    For a fixed validation batch (the first ``n_examples`` of the validation split) at the training length
    and at the longest evaluation length, one forward pass with the model's internals gives each layer's
    attention matrix ``A`` ``(B, H, L, L)`` (:class:`posenc_exp.models.attention.Internals`); its mean over
    the batch is logged as one image per layer and length, ``view/attention/layer{i}@len={n}`` (``layer{i}`` is
    block ``i``, as in the diagnostics), the heads in a near-square grid (query rows, key columns) on one
    shared scale, so the encodings compare by what they do to attention, in and beyond the training length.
    With several replicas each replica's patterns go to its own run (one forward serves them all). Other
    networks (the feed-forward model) log nothing; under DDP rank 0 alone writes.
    """

    def __init__(self, n_examples: int = 32, head_pixels: int = 160) -> None:
        self.n_examples, self.head_pixels = n_examples, head_pixels

    def lengths(self, pl_module: L.LightningModule) -> list[int]:
        """The training length and the longest evaluation length (once if they are the same)."""
        return sorted({pl_module.train_length, *(pl_module.eval_lengths[-1:] or [])})

    @torch.no_grad()
    def all_patterns(
        self, net: AttentionStack, splits: dict[str, tuple[Tensor, Tensor]], lengths: list[int]
    ) -> list[dict[str, list[np.ndarray]]]:
        """Per replica, ``{"layer{i}@len={n}": [per-head (L, L) mean attention]}`` over the first
        ``n_examples`` of the validation split of each length ``n`` (``val@<n>``, or ``val`` for a task with
        one length), from one forward of every replica."""
        was_training = net.training
        net.eval()
        patterns: list[dict[str, list[np.ndarray]]] = []
        device = next(net.parameters()).device
        for n in lengths:
            x = splits.get(f"val@{n}", splits["val"])[0][:, : self.n_examples].to(device)
            _, internals = net(x, return_internals=True)
            for layer, attention in enumerate(internals.attention, start=1):  # each (replica, B, H, L, L)
                for replica, heads in enumerate(attention.float().mean(dim=1).cpu().numpy()):
                    if replica == len(patterns):
                        patterns.append({})
                    patterns[replica][f"layer{layer}@len={n}"] = list(heads)
        net.train(was_training)
        return patterns

    def patterns(
        self, net: AttentionStack, splits: dict[str, tuple[Tensor, Tensor]], lengths: list[int], replica: int = 0
    ) -> dict[str, list[np.ndarray]]:
        """Replica ``replica``'s :meth:`all_patterns`."""
        return self.all_patterns(net, splits, lengths)[replica]

    def render(self, patterns: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
        """``{"view/attention/layer{i}@len={n}": (H, W, 3) uint8 image}``: the heads of one replica's patterns."""
        images = {}
        for name, heads in patterns.items():
            titles = [f"head {h}" for h in range(len(heads))]
            size = (self.head_pixels, self.head_pixels)
            columns = math.ceil(math.sqrt(len(heads)))  # a near-square grid: TensorBoard shrinks wide images
            images[f"{VIEW}/attention/{name}"] = labelled_heatmaps(
                heads, "query", "key", titles=titles, size=size, columns=columns
            )
        return images

    def images(
        self, net: AttentionStack, splits: dict[str, tuple[Tensor, Tensor]], lengths: list[int], replica: int = 0
    ) -> dict[str, np.ndarray]:
        """Replica ``replica``'s images (:meth:`render` of its :meth:`patterns`)."""
        return self.render(self.patterns(net, splits, lengths, replica))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writers = replica_writers(trainer)
        if not writers or not isinstance(pl_module.net, AttentionStack) or not trainer.is_global_zero:
            return
        patterns = self.all_patterns(pl_module.net, trainer.datamodule.splits, self.lengths(pl_module))
        for replica, writer in writers:
            for tag, image in self.render(patterns[replica]).items():
                write_image(writer, tag, image, trainer.current_epoch)


class PositionPerplexity(L.Callback):
    """After each validation, the TensorBoard image ``view/ppl_by_position``: the perplexity at each position of
    the longest evaluation windows, ``ppl(t) = exp(mean over windows of the loss at t)`` (Press et al., ICLR
    2022; see :mod:`posenc_exp.perplexity`), the training length marked, the epoch as its step; each replica's
    into its own run. Does nothing for tasks other than language modelling, or without a TensorBoardLogger."""

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        position_loss = getattr(pl_module, "position_loss", None)  # (replica, position)
        writers = replica_writers(trainer)
        if position_loss is None or not writers or trainer.sanity_checking or not trainer.is_global_zero:
            return
        import matplotlib

        from posenc_exp.perplexity import draw_position_perplexity

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        for replica, writer in writers:
            figure, axes = plt.subplots(figsize=(6, 3.5))
            curve = {f"epoch {trainer.current_epoch}": position_loss[replica].tolist()}
            draw_position_perplexity(axes, curve, pl_module.train_length)
            figure.tight_layout()
            writer.add_figure(f"{VIEW}/ppl_by_position", figure, trainer.current_epoch, close=True)
