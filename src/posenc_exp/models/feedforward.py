"""The seed's network: a window of scalars plus a positional encoding, then a one-hidden-layer MLP."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from posenc_exp.encodings import NoPE, PositionalEncoding
from posenc_exp.models.layers import Linear


class FeedForward(nn.Module):
    """``y = tanh(W2 relu(W1 (x + p) + b1) + b2)`` for a window ``x in R^C`` and encoding ``p in R^C``.

    The encoding is redundant with the first bias (the "bias identity"):
    ``W1 (x + p) + b1 = W1 x + (W1 p + b1)``, so :meth:`fold_encoding` returns an equivalent network
    without an encoding. Only input-acting encodings of width 1 fit this model. Every weight has a leading
    replica axis (``posenc_exp.models.layers``). Its config's checks are its schema's
    (``posenc_exp.schemas.model.FeedForward``).
    """

    def __init__(self, length: int, n_hidden: int, encoding: PositionalEncoding) -> None:
        super().__init__()
        if encoding.acts_on != "input":
            raise ValueError(
                f"model=feedforward takes only input-added encodings (learned, sinusoidal, none); "
                f"got one that acts on '{encoding.acts_on}'"
            )
        self.length = length
        self.encoding = encoding
        self.hidden = Linear(length, n_hidden)
        self.out = Linear(n_hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(R or 1, batch, length)`` -> ``(R, batch)``."""
        positions = self.encoding.positions(x.shape[-1], x.device)  # (R or 1, length), or None for 0..length-1
        x = (
            self.encoding(x.unsqueeze(-1)) if positions is None else self.encoding(x.unsqueeze(-1), positions)
        ).squeeze(-1)
        return torch.tanh(self.out(torch.relu(self.hidden(x)))).squeeze(-1)

    @torch.no_grad()
    def fold_encoding(self) -> FeedForward:
        """An equivalent network with no encoding and first bias ``b1' = b1 + W1 p``."""
        zeros = self.hidden.weight.new_zeros(1, 1, self.length, 1)
        position = self.encoding(zeros).reshape(-1, self.length, 1)  # (R or 1, length, 1)
        folded = copy.deepcopy(self)
        folded.encoding = NoPE()
        folded.hidden.bias += (self.hidden.weight @ position).squeeze(-1)
        return folded
