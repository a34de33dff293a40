"""Callbacks that log what the encodings do to TensorBoard."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
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


class ResumableCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that keeps its tracking when a run resumes into another directory.

    Lightning restores only ``best_model_path`` when the checkpoint's ``dirpath`` differs from this run's, so a
    resumed run forgot the best score (``best_val_loss``) and took its first epoch for the best. Here the
    tracked files are carried over: a monitored callback's best checkpoints are copied into this run's
    ``dirpath`` (rank 0; the old run's files are never touched) and its scores restored, so a later epoch
    replaces the best only when it is better; the paths of an unmonitored one (``last.ckpt``) point into
    this run's ``dirpath``, where its next save writes.
    """

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
