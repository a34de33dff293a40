"""A task: recall the first value of a window of noise."""

from __future__ import annotations

import torch
from torch import Tensor

from posenc_exp.data import WindowTask


class FirstValue(WindowTask):
    """Windows ``x in R^n`` with ``x_i ~ N(0, 1)`` i.i.d.; the target is the first value, ``y = x_1``.

    The answer sits at a fixed *absolute* position (the start), at a distance from the end that grows with
    ``n``: the mirror image of ``data=lag``. The target is a function of the window, so the best achievable
    loss is 0 (:attr:`loss_floor`). A model blind to order can do no better than the window's mean,
    whose expected loss is ``1 - 1/n``.
    """

    loss_floor = 0.0

    def sample(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x = torch.randn(count, n, generator=generator)
        return x, x[:, 0].clone()
