"""A diagnostic: how far each attention layer looks."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from posenc_exp.callbacks import tensorboard_writer
from posenc_exp.errors import ConfigError
from posenc_exp.models import AttentionStack


def mean_attention_distance(attention: Tensor) -> float:
    """``mean_{b,h,i} sum_j A_ij |i - j|`` for attention matrices ``A`` ``(B, H, L, L)``: the distance between a
    query and the keys it attends, weighted by attention, in positions. Source: the "mean attention
    distance" of Dosovitskiy et al., "An Image Is Worth 16x16 Words", ICLR 2021 (Sec. 4.5)."""
    positions = torch.arange(attention.shape[-1], device=attention.device, dtype=attention.dtype)
    distance = (positions[:, None] - positions[None, :]).abs()
    return (attention * distance).sum(dim=-1).mean().item()


class AttentionDistance(L.Callback):
    """After every training epoch, log ``diag/layer{i}/attention_distance`` (:func:`mean_attention_distance`)
    of each layer of an ``AttentionStack``, on the first ``n_examples`` validation examples; nothing for
    other models."""

    def __init__(self, n_examples: int = 128) -> None:
        if n_examples < 1:
            raise ConfigError(f"callbacks.attention_distance.n_examples={n_examples} is not allowed: expected >= 1")
        self.n_examples = n_examples

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer, net = tensorboard_writer(trainer), pl_module.net
        if writer is None or not trainer.is_global_zero or not isinstance(net, AttentionStack):
            return
        x = trainer.datamodule.splits["val"][0][: self.n_examples].to(pl_module.device)
        _, internals = net(x, return_internals=True)
        for layer, attention in enumerate(internals.attention, start=1):
            distance = mean_attention_distance(attention)
            writer.add_scalar(f"diag/layer{layer}/attention_distance", distance, trainer.current_epoch)
