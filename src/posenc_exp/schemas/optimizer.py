"""Schemas of ``conf/optimizer`` (``torch.optim``), with the range checks torch does not make."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

FLOAT32_MAX = 3.4028234663852886e38  # the largest float32: the weights' dtype


@dataclass
class Adam:
    """``torch.optim.Adam`` (Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015)."""

    _target_: str = MISSING
    lr: float = MISSING
    # torch's implementation: null lets torch choose (the for-loop on the CPU); true, the fused kernel, one call
    # for every parameter tensor (the same algorithm; its results differ from the for-loop's in the last bits).
    fused: Optional[bool] = None  # noqa: UP045 - OmegaConf 2.3 reads typing.Optional, not X | None

    @classmethod
    def check_config(cls, config: Any) -> None:
        """``lr`` finite and > 0, and small enough that Adam's first step fits a float32 weight: that step is
        ``lr / (1 - beta1)`` per weight in torch's implementation (``step_size = lr / bias_correction1``;
        ``beta1`` = 0.9 unless ``betas`` is set), so ``lr < 3.4e38 * (1 - beta1)``; beyond, torch fails with
        an overflow in its first step."""
        from posenc_exp.checks import require_number

        beta1 = float(config.get("betas", [0.9, 0.999])[0])
        limit = FLOAT32_MAX * (1 - beta1)
        require_number("optimizer.lr", config.lr, low=0.0, high=limit, allowed=f"a number > 0 and < {limit:.3g}")


SCHEMAS = {"adam": Adam}
