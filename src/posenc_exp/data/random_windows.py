"""The seed's task: predict the next value of a standard-normal series from a window before it."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from posenc_exp.data.base import SyntheticDataModule
from posenc_exp.schemas.data import RandomSpec


class RandomWindows(SyntheticDataModule, RandomSpec):
    """Sliding windows over ``s_1..s_xlen ~ N(0, 1)`` i.i.d.: ``x_t = s_{t..t+C-1}``, ``y_t = s_{t+C}``.

    There are ``xlen - C`` samples (the seed's data). They are assigned to the train and validation splits
    by a seeded permutation, ``round(val_fraction * n)`` of them to validation. Since the target is
    independent of its window, the Bayes predictor is ``E[y | x] = 0`` and the best achievable expected
    MSE is ``Var(y) = 1`` (:attr:`loss_floor`), known in advance. On a split of a few windows the realised
    loss of that predictor, ``mean(y_val^2)``, scatters around 1, and a lucky model can land below it.
    """

    def __init__(self, length: int, xlen: int, val_fraction: float, **common: Any) -> None:
        """``common``: the :class:`SyntheticDataModule` arguments (batch_size, chunk_steps, seed, max_positions)."""
        super().__init__(**common)
        self.length = length
        self.xlen = xlen
        self.val_fraction = val_fraction

    def generate(self, generator: torch.Generator) -> dict[str, tuple[Tensor, Tensor]]:
        series = torch.randn(self.xlen, generator=generator)
        windows = series.unfold(0, self.length, 1)[:-1]
        targets = series[self.length :]
        order = torch.randperm(len(targets), generator=generator)
        n_val = round(self.val_fraction * len(targets))
        val, train = order[:n_val], order[n_val:]
        return {"train": (windows[train], targets[train]), "val": (windows[val], targets[val])}

    loss_floor = 1.0  # Var(y) for y ~ N(0, 1)
