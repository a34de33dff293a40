"""Callbacks that log what the encodings do to TensorBoard."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from posenc_exp.encodings import PositionalEncoding
from posenc_exp.images import heatmap_rgb, snapshot_images


def tensorboard_writer(trainer: L.Trainer) -> Any | None:
    """The ``SummaryWriter`` of the first TensorBoardLogger, or ``None`` (e.g. under ``fast_dev_run``)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class EncodingSnapshot(L.Callback):
    """At the end of training epochs, log what ``net.encoding`` looks like, whatever its family.

    Through the encoding's own snapshot methods (see ``posenc_exp.encodings``):

    - ``encoding/<name>`` histograms from ``snapshot_histograms()``: the table's entries as
      ``encoding/values`` (learned, sinusoidal, t5), ``encoding/log10_frequency`` for RoPE;
    - ``encoding/<name>`` images of ``snapshot_maps()``, rendered by ``posenc_exp.images``: ``encoding/table``
      (position x dimension) and ``encoding/cosine_similarity`` (between positions) for tables,
      ``encoding/bias`` (each head's bias over n x n positions, side by side) for ALiBi and T5,
      ``encoding/rotation`` (``cos(m theta_i)``, position x frequency) for RoPE; nothing for NoPE.

    and, for a trainable encoding with a ``snapshot()`` tensor ``P`` (learned, learnable sinusoidal, t5):

    - ``encoding/distance_from_init``: ``||P_e - P_0||_F``, the Frobenius distance from the initial value;
    - ``encoding/history``: an image, row of ``P`` (position, or T5 bucket) x epoch (columns), of each row's
      value (its mean when ``P`` is wider than one), on a diverging scale around 0.

    A fixed encoding (nothing to train) is logged once, at the first epoch. The per-epoch history is kept in
    the callback's state, so a resumed run continues its heatmap. Without a TensorBoardLogger (e.g. under
    ``fast_dev_run``) it does nothing.
    """

    def __init__(self, cell_pixels: int = 8) -> None:
        self.cell_pixels = cell_pixels
        self.history: list[list[float]] = []
        self.logged_fixed = False

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard_writer(trainer)
        encoding: PositionalEncoding = pl_module.net.encoding
        trainable = encoding.trainable
        if writer is None or trainer.sanity_checking or (self.logged_fixed and not trainable):
            return
        if not trainer.is_global_zero:  # DDP: the ranks hold the same encoding; rank 0 alone writes it
            return
        step = trainer.current_epoch
        for name, values in encoding.snapshot_histograms().items():
            writer.add_histogram(f"encoding/{name}", values, step)
        for name, image in snapshot_images(encoding).items():
            writer.add_image(f"encoding/{name}", image, step, dataformats="HWC")
        self.logged_fixed = True
        current: Tensor | None = encoding.snapshot()
        if not trainable or current is None:
            return
        initial = pl_module.encoding_initial
        writer.add_scalar("encoding/distance_from_init", (current - initial).norm().item(), step)
        self.history.append(current.reshape(len(current), -1).mean(dim=1).tolist())
        image = heatmap_rgb(np.array(self.history).T, (self.cell_pixels, 2))
        writer.add_image("encoding/history", image, step, dataformats="HWC")

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])


class PositionPerplexity(L.Callback):
    """After each validation, the TensorBoard image ``val/ppl_by_position``: the perplexity at each position of
    the longest evaluation windows, ``ppl(t) = exp(mean over windows of the loss at t)`` (Press et al., ICLR
    2022; see :mod:`posenc_exp.perplexity`), the training length marked, the epoch as its step. Does nothing
    for tasks other than language modelling, or without a TensorBoardLogger."""

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        position_loss = getattr(pl_module, "position_loss", None)
        writer = tensorboard_writer(trainer)
        if position_loss is None or writer is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        import matplotlib

        from posenc_exp.perplexity import draw_position_perplexity

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(6, 3.5))
        curve = {f"epoch {trainer.current_epoch}": position_loss.tolist()}
        draw_position_perplexity(axes, curve, pl_module.train_length)
        figure.tight_layout()
        writer.add_figure("val/ppl_by_position", figure, trainer.current_epoch, close=True)
