"""The AR(p) task: predict the next value of an autoregressive series from the window before it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from posenc_exp.data.lengths import WindowTask
from posenc_exp.schemas.data import ARSpec, is_stationary  # noqa: F401  is_stationary: exported here too


class AutoregressiveWindows(WindowTask, ARSpec):
    """``s_t = a_1 s_{t-1} + ... + a_p s_{t-p} + sigma * eps_t``, ``eps_t ~ N(0, 1)`` i.i.d.

    Each example is an independent series started at 0 and run for ``burn_in`` steps (to forget the start),
    then ``n`` more values as the window ``x`` and one more as the target ``y``. With a window of at least
    ``p`` values the best predictor is ``E[y | x] = a_1 x_n + ... + a_p x_{n-p+1}``, and its mean squared
    error is exactly ``sigma^2``, known in advance (:attr:`loss_floor`); the run logs the gap
    ``val/loss - sigma^2``. The coefficients must be stationary (:func:`is_stationary`).
    """

    def __init__(self, coefficients: Sequence[float], sigma: float, burn_in: int, **task: Any) -> None:
        super().__init__(**task)
        self.coefficients = [float(a) for a in coefficients]
        self.sigma, self.burn_in = sigma, burn_in

    def sample(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Simulated in float64 step by step, vectorised over the ``count`` series."""
        p, steps = len(self.coefficients), self.burn_in + n + 1
        a = torch.tensor(self.coefficients[::-1], dtype=torch.float64)  # a_p .. a_1, oldest value first
        noise = self.sigma * torch.randn(count, steps, generator=generator, dtype=torch.float64)
        series = torch.zeros(count, p + steps, dtype=torch.float64)
        for t in range(steps):
            series[:, p + t] = series[:, t : p + t] @ a + noise[:, t]
        series = series[:, p + self.burn_in :].float()
        return series[:, :n].contiguous(), series[:, n].clone()

    @property
    def loss_floor(self) -> float:
        """``sigma^2``: the MSE of the true conditional mean."""
        return self.sigma**2
