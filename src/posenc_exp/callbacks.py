"""Callbacks that log what the encodings do to TensorBoard."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from posenc_exp.images import heatmap_rgb


def tensorboard_writer(trainer: L.Trainer) -> Any | None:
    """The ``SummaryWriter`` of the first TensorBoardLogger, or ``None`` (e.g. under ``fast_dev_run``)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class EncodingSnapshot(L.Callback):
    """At the end of every training epoch, log the encoding ``P`` (from ``net.encoding.snapshot()``):

    - ``encoding/values``: a histogram of the entries of ``P``;
    - ``encoding/distance_from_init``: ``||P_e - P_0||_F``, the Frobenius distance from the initial value;
    - ``encoding/history``: an image, position (rows) x epoch (columns), of each position's value
      (the mean over the width of ``P`` when it is wider than one), on a diverging scale around 0.

    The per-epoch history is kept in the callback's state, so a resumed run continues its heatmap.
    Without a TensorBoardLogger, or for an encoding with nothing to snapshot, it does nothing.
    """

    def __init__(self, cell_pixels: int = 8) -> None:
        self.cell_pixels = cell_pixels
        self.history: list[list[float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard_writer(trainer)
        current: Tensor | None = pl_module.net.encoding.snapshot()
        if writer is None or current is None or trainer.sanity_checking:
            return
        step = trainer.current_epoch
        writer.add_histogram("encoding/values", current, step)
        initial = pl_module.encoding_initial
        writer.add_scalar("encoding/distance_from_init", (current - initial).norm().item(), step)
        self.history.append(current.reshape(len(current), -1).mean(dim=1).tolist())
        image = heatmap_rgb(np.array(self.history).T, (self.cell_pixels, 2))
        writer.add_image("encoding/history", image, step, dataformats="HWC")

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
