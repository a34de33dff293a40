"""What users of language models read: loss per byte, bits per byte, perplexity, and perplexity by position.

For next-token prediction with per-token cross-entropy ``l_t = -ln p(s_{t+1} | s_1..s_t)`` (in nats; one
token = one byte for :class:`posenc_exp.data.TextBytes`), over the windows of one evaluation length:

- ``loss = mean_t l_t``, nats per byte;
- ``bpb = loss / ln 2``, bits per byte (the compression rate; 8 for a uniform guess over 256 bytes);
- ``ppl = exp(loss)``, perplexity (256 for a uniform guess);
- ``ppl(t) = exp(mean over windows of l_t)``: perplexity by position ``t`` inside the window, the curve of
  Press et al., "Train Short, Test Long: Attention with Linear Biases Enables Input Length Extrapolation"
  (ICLR 2022), which shows where past the training length an encoding's predictions break down.

The module logs ``val/{loss,bpb,ppl}@len=<n>`` per evaluation length and keeps the per-position loss of the
longest one; :class:`posenc_exp.callbacks.PositionPerplexity` draws ``ppl(t)`` into TensorBoard,
``posenc_exp.train`` writes it into ``metrics.json`` (``position_loss``), and the sweep report draws it per
cell (``ppl_by_position.png``, :func:`posenc_exp.analysis.report.position_perplexity_plot`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor
from torch.nn import functional as F

POSITION_LOSS = "position_loss"  # the metrics.json key: {"length": n, "loss": [l_1 .. l_n]}


def lm_metrics(logits: Tensor, targets: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """``({"loss", "bpb", "ppl"}, position_loss)`` of the module docstring for ``logits`` ``(B, n, V)`` and
    ``targets`` ``(B, n)``; ``position_loss`` is ``(n,)``, the mean loss at each position."""
    per_token = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    loss = per_token.mean()
    return {"loss": loss, "bpb": loss / math.log(2), "ppl": loss.exp()}, per_token.mean(dim=0)


def smooth(values: Sequence[float], bins: int) -> tuple[list[float], list[float]]:
    """``(centres, means)``: ``values`` (position ``t = 1..n``) averaged over ``bins`` equal runs of positions;
    a per-position curve over a few hundred windows is noisy, a bin of ``n / bins`` positions much less."""
    n = len(values)
    bins = max(1, min(bins, n))
    edges = [round(i * n / bins) for i in range(bins + 1)]
    centres = [(edges[i] + 1 + edges[i + 1]) / 2 for i in range(bins)]
    means = [sum(values[edges[i] : edges[i + 1]]) / (edges[i + 1] - edges[i]) for i in range(bins)]
    return centres, means


def draw_position_perplexity(
    axes: Any, curves: dict[str, Sequence[float]], train_length: int | None, bins: int | None = None
) -> None:
    """``ppl(t)`` on ``axes`` (log scale), one line per label in ``curves`` (per-position losses, nats),
    optionally averaged over ``bins`` runs of positions, with the training length marked."""
    for label, losses in curves.items():
        xs, ys = smooth(losses, bins) if bins else (list(range(1, len(losses) + 1)), list(losses))
        axes.plot(xs, [math.exp(min(y, 700.0)) for y in ys], label=label, linewidth=1.2)
    if train_length:
        axes.axvline(train_length, color="grey", linestyle="--", linewidth=1, label=f"training length {train_length}")
    axes.set_yscale("log")
    axes.set(xlabel="position in the evaluation window (bytes)", ylabel="perplexity", title="perplexity by position")
    axes.legend(fontsize="small")
