"""The lag task: recall the value ``k`` steps back in a window of noise."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from posenc_exp.data.lengths import WindowTask
from posenc_exp.schemas.data import LagSpec


class LagWindows(WindowTask, LagSpec):
    """Windows ``x in R^n`` with ``x_i ~ N(0, 1)`` i.i.d.; the target is the value ``k`` steps back from the
    end of the window, ``y = x_{n-k+1}`` (1-based: ``k = 1`` is the last value, ``k = n`` the first).

    The target is a deterministic function of the window, so the best achievable loss is 0
    (:attr:`loss_floor`). The answer sits at a fixed offset from the end: a relative position, so a model
    that reads positions relative to the read-out can serve any window length ``n >= k``.
    """

    def __init__(self, lag: int, **task: Any) -> None:
        super().__init__(**task)
        self.lag = lag

    def sample(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x = torch.randn(count, n, generator=generator)
        return x, x[:, n - self.lag].clone()

    @property
    def loss_floor(self) -> float:
        """0: the target is a function of the window."""
        return 0.0
