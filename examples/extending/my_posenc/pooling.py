"""A model: attention pooling of a window of scalars into one prediction."""

from __future__ import annotations

from torch import Tensor, nn

from posenc_exp.encodings import PositionalEncoding
from posenc_exp.errors import ConfigError


class AttentionPooling(nn.Module):
    """``y = w^T sum_i a_i h_i + b`` with ``a = softmax_i(v^T tanh(W h_i + c))`` and ``h_i = e(x_i) + p_i``.

    Each scalar ``x_i`` of a window ``(B, L)`` is embedded by ``e = Linear(1, d_model)`` and an input-added
    encoding adds ``p_i``; one learned query scores every position with the additive score of Bahdanau et
    al., "Neural Machine Translation by Jointly Learning to Align and Translate", ICLR 2015, and the
    weighted sum pools the window into one vector, as in Yang et al., "Hierarchical Attention Networks for
    Document Classification", NAACL 2016. Without an encoding the model is blind to the order of the
    window. Serves any window length.
    """

    def __init__(self, d_model: int, encoding: PositionalEncoding) -> None:
        super().__init__()
        if d_model < 1:
            raise ConfigError(f"model.d_model={d_model} is not allowed: expected an integer >= 1")
        if encoding.acts_on != "input":
            raise ConfigError(f"model=pooling takes input-added encodings only; this one acts on '{encoding.acts_on}'")
        self.encoding = encoding
        self.embed = nn.Linear(1, d_model)
        self.score = nn.Sequential(nn.Linear(d_model, d_model), nn.Tanh(), nn.Linear(d_model, 1, bias=False))
        self.readout = nn.Linear(d_model, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(B, L)`` -> ``(B,)``."""
        h = self.encoding(self.embed(x.unsqueeze(-1)))  # (B, L, d_model)
        weights = self.score(h).softmax(dim=1)  # (B, L, 1)
        return self.readout((weights * h).sum(dim=1)).squeeze(-1)
