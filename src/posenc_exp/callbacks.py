"""Callbacks that log what the encodings do to TensorBoard."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from posenc_exp.encodings import PositionalEncoding
from posenc_exp.images import heatmap_rgb, snapshot_images
from posenc_exp.loggers import replica_writers


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

    A fixed encoding (nothing to train) is logged once, at the first epoch. With several replicas each
    replica's snapshots go to its own run (``replica_<k>/``). The per-epoch history is kept in the callback's
    state, so a resumed run continues its heatmap. Without a TensorBoardLogger (e.g. under ``fast_dev_run``)
    it does nothing.
    """

    def __init__(self, cell_pixels: int = 8) -> None:
        self.cell_pixels = cell_pixels
        self.history: dict[int, list[list[float]]] = {}  # replica -> per epoch, each row's value
        self.logged_fixed = False

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
                writer.add_histogram(f"encoding/{name}", values, step)
            for name, image in snapshot_images(encoding, replica).items():
                writer.add_image(f"encoding/{name}", image, step, dataformats="HWC")
            if not trainable or current is None:
                continue
            own = current[replica]
            distance = (own - pl_module.encoding_initial[replica]).norm().item()
            writer.add_scalar("encoding/distance_from_init", distance, step)
            history = self.history.setdefault(replica, [])
            history.append(own.reshape(len(own), -1).mean(dim=1).tolist())
            image = heatmap_rgb(np.array(history).T, (self.cell_pixels, 2))
            writer.add_image("encoding/history", image, step, dataformats="HWC")
        self.logged_fixed = True

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {int(k): list(v) for k, v in state_dict["history"].items()}
