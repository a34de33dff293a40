"""Positional encodings behind one interface that says where each family acts.

Every encoding is an ``nn.Module`` with a class attribute ``acts_on``:

- ``"input"``: added once to the input embeddings, ``x_i <- x_i + p_i`` (``forward(x)``);
- ``"rotary"``: rotates queries and keys in every attention layer (``rotate(q, k)``);
- ``"bias"``: an additive bias on the attention logits (``attention_bias(n_query, n_key)``).

``snapshot()`` returns the tensor worth watching during training (or ``None``) for the snapshot callback.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn


class LengthError(ValueError):
    """An encoding was asked for a position it cannot represent."""


class PositionalEncoding(nn.Module):
    """Base class: the identity encoding. Subclasses set ``acts_on`` and override one hook."""

    acts_on: ClassVar[str] = "input"

    def forward(self, x: Tensor) -> Tensor:
        """Input families: ``x`` is ``(batch, length, d_model)``; returns ``x`` with positions added."""
        return x

    def snapshot(self) -> Tensor | None:
        """The tensor the snapshot callback logs (detached, on CPU), or ``None`` when there is none."""
        return None


class NoPE(PositionalEncoding):
    """No positional encoding ("NoPE"): ``x_i <- x_i``.

    Source: Kazemnejad et al., "The Impact of Positional Encoding on Length Generalization in
    Transformers", NeurIPS 2023. A causal mask alone lets attention recover position.
    """


class LearnedAbsolute(PositionalEncoding):
    """A trainable absolute table ``P in R^{max_len x d_model}``: ``x_i <- x_i + P_i``.

    Initialised ``P_ij ~ N(0, init_std^2)``. With ``d_model = 1`` on the feed-forward model this is exactly
    the seed's trainable vector of ``context_size`` values. Source: Gehring et al., "Convolutional Sequence
    to Sequence Learning", ICML 2017 (learned position embeddings).
    """

    def __init__(self, max_len: int, d_model: int = 1, init_std: float = 1.0) -> None:
        super().__init__()
        self.max_len = max_len
        self.table = nn.Parameter(torch.randn(max_len, d_model) * init_std)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[-2]
        if length > self.max_len:
            raise LengthError(
                f"encoding=learned has max_len={self.max_len} positions and cannot encode a sequence of "
                f"length {length}; raise encoding.max_len or use a relative encoding"
            )
        return x + self.table[:length]

    def snapshot(self) -> Tensor:
        return self.table.detach().cpu().clone()
