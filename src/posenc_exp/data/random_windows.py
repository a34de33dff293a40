"""The seed's task: predict the next value of a standard-normal series from a window before it."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from posenc_exp.checks import require_int, require_memory, require_number
from posenc_exp.data.base import SyntheticDataModule
from posenc_exp.errors import ConfigError


class RandomWindows(SyntheticDataModule):
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

    @classmethod
    def check_config(cls, data: Any) -> None:
        """``length >= 1``, ``xlen >= length + 2``, a ``val_fraction`` in (0, 1) that leaves both splits
        non-empty, and the series and its windows (``(xlen - C) * C`` float32 values) in memory."""
        super().check_config(data)
        require_int("data.length", data.length, 1)
        length = data.length
        require_int(
            "data.xlen",
            data.xlen,
            length + 2,
            allowed=f"an integer >= data.length + 2 = {length + 2} (a window for each split)",
        )
        require_number("data.val_fraction", data.val_fraction, 0, 1, "a fraction strictly between 0 and 1")
        n = data.xlen - length
        n_val = round(data.val_fraction * n)
        if not 1 <= n_val < n:
            raise ConfigError(
                f"data.val_fraction={data.val_fraction} of the {n} windows (data.xlen - data.length) is "
                f"{n_val}, leaving the {'validation' if n_val < 1 else 'training'} split empty: expected a "
                f"fraction that gives both splits at least one window (at least {1 / n:.3g} and at most "
                f"{1 - 1 / n:.3g} here)"
            )
        require_memory(f"data.xlen={data.xlen} data.length={length}", 4 * (data.xlen + 2 * n * length), "the windows")

    def generate(self, generator: torch.Generator) -> dict[str, tuple[Tensor, Tensor]]:
        series = torch.randn(self.xlen, generator=generator)
        windows = series.unfold(0, self.length, 1)[:-1]
        targets = series[self.length :]
        order = torch.randperm(len(targets), generator=generator)
        n_val = round(self.val_fraction * len(targets))
        val, train = order[:n_val], order[n_val:]
        return {"train": (windows[train], targets[train]), "val": (windows[val], targets[val])}

    loss_floor = 1.0  # Var(y) for y ~ N(0, 1)
