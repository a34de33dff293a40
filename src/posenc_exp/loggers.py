"""TensorBoard loggers: the run's own, and one per replica (``replica_<k>/``) when a run trains several.

The LightningModule writes its values once per epoch (``PosEncModule.write_logged``): the means over the
replicas to the run's logger and, with ``replicas=K > 1``, each replica's values to replica ``k``'s logger,
which writes them under the plain tags into ``<run dir>/replica_<k>/``, so
TensorBoard shows every replica as a run of its own (overlaid, like seeds), with the same tags as an
ordinary run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger

from posenc_exp.rundir import REPLICA_DIR


def replica_tag_suffix(replica: int) -> str:
    """The suffix of replica ``replica``'s tags as the module logs them."""
    return f"/replica_{replica}"


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger for the run itself (with several replicas: their means), flushing its event
    file at most every ``flush_secs`` seconds.

    Lightning calls :meth:`save` after every ``log_metrics`` (twice per epoch, and on every replica's logger
    whether it wrote or not); its save flushes the event file, waiting for the writer thread, and looks for
    ``hparams.yaml`` on disk. Here that happens at the first call and then at most every ``flush_secs``;
    TensorBoard's writer also flushes on its own thread every ``flush_secs`` (its ``SummaryWriter`` argument), and
    the logger flushes and closes the file when training ends, so a live TensorBoard lags at most that long.
    """

    def __init__(self, *args: Any, flush_secs: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, flush_secs=flush_secs, **kwargs)
        self.flush_secs = flush_secs
        self.saved_at = -math.inf

    def save(self) -> None:
        if time.monotonic() - self.saved_at >= self.flush_secs:
            super().save()
            self.saved_at = time.monotonic()


class ReplicaLogger(TensorBoardLogger):
    """Replica ``replica``'s TensorBoard run in ``<run dir>/replica_<replica>``: its own values, plain tags."""

    def __init__(self, run_dir: str | Path, replica: int) -> None:
        super().__init__(Path(run_dir) / REPLICA_DIR.format(replica), name="", version="", default_hp_metric=False)
        self.replica = replica

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """What Lightning logs is the run's (the means over the replicas): not this replica's."""

    def log_replica(self, metrics: Mapping[str, float], step: int) -> None:
        """This replica's own values, under the plain tags (from ``PosEncModule.write_logged``)."""
        super().log_metrics(metrics, step)

    def log_hyperparams(self, params: Any, metrics: Any = None) -> None:
        """The replica's HParams session is written by ``posenc_exp.train`` with its own seed."""


def tensorboard_writer(trainer: L.Trainer) -> Any | None:
    """The ``SummaryWriter`` of the run's TensorBoardLogger (the first one), or ``None`` (e.g. ``fast_dev_run``)."""
    for logger in trainer.loggers:
        if isinstance(logger, LightningTensorBoardLogger):
            return logger.experiment
    return None


def replica_writers(trainer: L.Trainer) -> list[tuple[int, Any]]:
    """``(replica, SummaryWriter)`` for each replica's run, or ``[(0, the run's writer)]`` for a run of one
    replica; empty without a TensorBoardLogger."""
    replicas = [(logger.replica, logger.experiment) for logger in trainer.loggers if isinstance(logger, ReplicaLogger)]
    if replicas:
        return replicas
    writer = tensorboard_writer(trainer)
    return [] if writer is None else [(0, writer)]
