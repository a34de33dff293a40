"""The LightningModule: builds the network from a primitive config and trains it on chunks of batches."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torch import Tensor, nn


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class PosEncModule(L.LightningModule):
    """Wraps a network built with ``hydra.utils.instantiate(net)``.

    The init arguments are plain dicts (the resolved ``model`` and ``optimizer`` configs), so checkpoints
    hold only primitives and load with ``torch.load(path, weights_only=True)``.

    Training uses manual optimization over a chunk of mini-batches (see ``posenc_exp.data.base``): one
    optimizer step per mini-batch, loss ``MSE(f(x), y)``. The loss stays on the device during the chunk;
    a single finiteness check per chunk is the only host sync. Under DDP every logged value is reduced over
    the ranks once, at epoch end (``sync_dist=True`` on epoch-level logs).
    """

    def __init__(self, net: dict[str, Any], optimizer: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net: nn.Module = instantiate(net)
        self.encoding_initial: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return nn.functional.mse_loss(prediction, target)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return instantiate(self.hparams.optimizer, _partial_=True)(self.parameters())

    def on_fit_start(self) -> None:
        if self.encoding_initial is None:
            self.encoding_initial = self.net.encoding.snapshot()

    def training_step(self, chunk: tuple[Tensor, Tensor], batch_idx: int) -> None:
        optimizer = self.optimizers()
        total = torch.zeros((), device=self.device)
        for x, y in zip(*chunk, strict=True):
            loss = self.loss(self.net(x), y)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()
            total += loss.detach() * len(y)
        n = chunk[1].shape[0] * chunk[1].shape[1]
        if not torch.isfinite(total):
            raise NonFiniteLossError(
                f"training loss became non-finite at epoch {self.current_epoch}, step {self.global_step}; "
                "lower optimizer.lr (the last good checkpoint is kept)"
            )
        self.log("train/loss", total / n, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch[0][0], batch[1][0]
        loss = self.loss(self.net(x), y)
        # Checked before the epoch's checkpoints are written: finite weights can still overflow in the forward
        # pass, and last.ckpt must stay the last state that evaluates to a finite loss.
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"validation loss became non-finite at epoch {self.current_epoch}; lower optimizer.lr "
                "(the last good checkpoint is kept)"
            )
        self.log("val/loss", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["encoding_initial"] = self.encoding_initial

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.encoding_initial = checkpoint.get("encoding_initial")
