"""KERPLE-log, a learned logarithmic bias on the attention logits."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from posenc_exp.encodings import BiasEncoding
from posenc_exp.errors import ConfigError


class KerpleLog(BiasEncoding):
    """KERPLE's logarithmic kernel of Chi et al., "KERPLE: Kernelized Relative Positional Embedding for
    Length Extrapolation", NeurIPS 2022 (Eq. 9)::

        b_h(i, j) = -r1_h * log(1 + r2_h * |i - j|),    r1_h, r2_h > 0 learned per head

    added to the logit of query ``i`` and key ``j``. Both parameters start at 1 and stay positive as the
    ``softplus`` of a raw value (the paper clamps them instead). The bias depends on the distance only, so
    any length is served. ``snapshot()`` is the ``(heads, 2)`` table of ``(r1, r2)``.
    """

    def __init__(self, n_heads: int, causal: bool = False, max_positions: int = 64) -> None:
        super().__init__()
        if n_heads < 1:
            raise ConfigError(f"encoding.n_heads={n_heads} is not allowed: expected an integer >= 1")
        self.causal, self.max_positions = causal, max_positions  # positions the snapshot map covers
        self.raw = nn.Parameter(torch.full((n_heads, 2), 1.0).expm1().log())  # softplus(raw) = 1

    def attention_bias(self, n_query: int, n_key: int) -> Tensor:
        r1, r2 = nn.functional.softplus(self.raw).T[:, :, None, None]  # each (heads, 1, 1)
        distance = self.relative_distance(n_query, n_key, self.raw.device).abs()
        return -r1 * torch.log1p(r2 * distance)

    def snapshot(self) -> Tensor:
        return nn.functional.softplus(self.raw).detach().cpu().clone()
