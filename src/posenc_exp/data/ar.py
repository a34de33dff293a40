"""The AR(p) task: predict the next value of an autoregressive series from the window before it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from posenc_exp.checks import is_number, require_int, require_memory, require_number
from posenc_exp.data.lengths import WindowTask, eval_lengths
from posenc_exp.errors import ConfigError


def is_stationary(coefficients: Sequence[float]) -> bool:
    """Whether AR coefficients ``a_1..a_p`` give a stationary process: every root of the characteristic
    polynomial ``z^p - a_1 z^(p-1) - ... - a_p`` lies strictly inside the unit circle (Box & Jenkins)."""
    roots = np.roots([1.0, *(-float(a) for a in coefficients)])
    return bool(np.all(np.abs(roots) < 1.0))


class AutoregressiveWindows(WindowTask):
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

    @classmethod
    def check_config(cls, data: Any) -> None:
        super().check_config(data)
        coefficients = list(data.coefficients)
        finite = all(is_number(a) and math.isfinite(a) for a in coefficients)
        if not coefficients or not finite or not is_stationary(coefficients):
            raise ConfigError(
                f"data.coefficients={coefficients} is not allowed: expected a stationary AR(p) "
                "(roots of z^p - a_1 z^(p-1) - ... - a_p inside the unit circle), e.g. [0.5, -0.3]"
            )
        if data.length < len(coefficients):
            raise ConfigError(
                f"data.length={data.length} is shorter than the AR order p={len(coefficients)}: the window "
                "must hold the p values that predict the next one"
            )
        require_number("data.sigma", data.sigma, low=0, allowed="a finite noise level > 0")
        require_int("data.burn_in", data.burn_in, 0, allowed="an integer >= 0")
        lengths = eval_lengths(data.length, data.eval_factors)
        series = data.n_train + data.n_val * len(lengths)
        require_memory(
            f"data.burn_in={data.burn_in}", 8 * series * (data.burn_in + max(lengths) + 1), "the simulated series"
        )

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
