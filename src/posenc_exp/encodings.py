"""Positional encodings behind one interface that says where each family acts.

Every encoding is an ``nn.Module`` with a class attribute ``acts_on``:

- ``"input"``: added once to the input embeddings, ``x_i <- x_i + p_i`` (``forward(x)``, ``x`` is
  ``(batch, length, d_model)``): :class:`NoPE`, :class:`LearnedAbsolute`, :class:`Sinusoidal`;
- ``"rotary"``: rotates queries and keys in every attention layer (``rotate(q, k)``, both
  ``(batch, heads, length, d_head)``, positions ``0..length-1``): :class:`RoPE`;
- ``"bias"``: an additive bias on the attention logits (``attention_bias(n_query, n_key)`` returns a float
  ``(heads, n_query, n_key)`` tensor, meant as the float ``attn_mask`` of
  ``torch.nn.functional.scaled_dot_product_attention``, i.e. added to the already scaled logits
  ``q.k / sqrt(d_head)``; a causal model adds its causal mask itself): :class:`ALiBi`, :class:`T5Bias`.
  Bias families are built once and shared by every layer; call ``attention_bias`` once per forward pass
  and hand the result to all layers.

Replicas (see ``posenc_exp.models.layers``): every learned tensor has a leading replica axis ``R`` (1 for
an ordinary run), inputs are ``(R or 1, batch, length, d_model)``, and a bias is ``(R or 1, heads, n_query,
n_key)``; position-only tensors (fixed tables, angles, slopes) have a replica axis of 1 and are shared.

For the snapshot callback (``posenc_exp.callbacks.EncodingSnapshot``) every encoding also offers:

- ``snapshot()``: the tensor recorded in ``metrics.json`` and tracked over training (histogram, distance
  from its initial value, per-row history), replica axis first, or ``None``: the table for
  :class:`LearnedAbsolute` and :class:`Sinusoidal` (``(R, max_positions, d_model)``), the bucket table for
  :class:`T5Bias` (``(R, num_buckets, heads)``), ``None`` for :class:`NoPE`, :class:`RoPE` and
  :class:`ALiBi`, which have no table (RoPE's frequencies and ALiBi's slopes are fixed and shown as images instead);
- ``snapshot_histograms(replica)``: name -> values for TensorBoard histograms;
- ``snapshot_maps(n, replica)``: name -> a numeric map over at most ``n`` positions (2-D, or a stack of one
  2-D map per head), which ``posenc_exp.images`` renders as TensorBoard images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from posenc_exp.errors import LengthError

# Positions an encoding without a table of its own covers when no max_positions is given (snapshots, caches).
DEFAULT_POSITIONS = 64


def replica_of(tensor: Tensor, replica: int) -> Tensor:
    """Replica ``replica``'s slice of a tensor with a leading replica axis, which is 1 when the replicas share
    it (a fixed table, a position-only bias)."""
    return tensor[replica if len(tensor) > 1 else 0]


class PositionalEncoding(nn.Module):
    """Base class: the identity encoding. Subclasses set ``acts_on`` and override their family's hook."""

    acts_on: ClassVar[str] = "input"
    snapshot_rows: ClassVar[str] = "position"  # what a row of snapshot() is, for the history image's axis

    def forward(self, x: Tensor) -> Tensor:
        """Input families: ``x`` is ``(R or 1, batch, length, d_model)``; returns ``x`` with positions added."""
        return x

    def rotate(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Rotary families: queries and keys ``(..., heads, length, d_head)``, rotated by position."""
        raise NotImplementedError(f"{type(self).__name__} acts on '{self.acts_on}', not on queries and keys")

    def attention_bias(self, n_query: int, n_key: int) -> Tensor:
        """Bias families: the float ``(R or 1, heads, n_query, n_key)`` bias added to the attention logits."""
        raise NotImplementedError(f"{type(self).__name__} acts on '{self.acts_on}', not on attention logits")

    def snapshot(self) -> Tensor | None:
        """The tensor the snapshot callback logs (detached, on CPU, replica axis first), or ``None``."""
        return None

    def snapshot_histograms(self, replica: int = 0) -> dict[str, Tensor]:
        """Name -> values for TensorBoard histograms; by default replica ``replica``'s snapshot, as ``values``."""
        current = self.snapshot()
        return {} if current is None else {"values": replica_of(current, replica)}

    def snapshot_maps(self, n_positions: int, replica: int = 0) -> dict[str, np.ndarray]:
        """Name -> a map over at most ``n_positions`` positions for TensorBoard images: a 2-D array, or a 3-D
        stack of 2-D maps shown side by side on one scale; none by default."""
        return {}

    @property
    def trainable(self) -> bool:
        """Whether training can change this encoding (a fixed one is snapshotted once)."""
        return any(p.requires_grad for p in self.parameters())


class NoPE(PositionalEncoding):
    """No positional encoding ("NoPE"): ``x_i <- x_i``.

    Source: Kazemnejad et al., "The Impact of Positional Encoding on Length Generalization in
    Transformers", NeurIPS 2023. A causal mask alone lets attention recover position.
    """


class AbsoluteTable(PositionalEncoding):
    """An absolute table ``P`` with one row per position, added to the input: ``x_i <- x_i + P_i``.

    ``table`` holds the rows, ``(R or 1, positions, d_model)`` (a Parameter or a buffer); ``max_positions`` rows
    are what ``snapshot()`` records.
    """

    option: ClassVar[str]  # the option name in conf/encoding, for error messages
    table: Tensor
    max_positions: int

    def rows(self, length: int) -> Tensor:
        """The first ``length`` rows; :class:`LengthError` if the table has fewer."""
        if length > self.table.shape[1]:
            raise LengthError(
                f"encoding={self.option} has a table of encoding.max_positions={self.table.shape[1]} positions (set "
                f"from data.max_positions) and cannot encode a sequence of length {length}; raise data.max_positions "
                "or use an encoding without a trained table (sinusoidal, rope, alibi, t5, none)"
            )
        return self.table[:, :length]

    def forward(self, x: Tensor) -> Tensor:
        return x + self.rows(x.shape[-2]).unsqueeze(1).to(x.dtype)

    def snapshot(self) -> Tensor:
        return self.table[:, : self.max_positions].detach().cpu().clone()

    def snapshot_maps(self, n_positions: int, replica: int = 0) -> dict[str, np.ndarray]:
        """``table``: position (rows) x dimension; ``cosine_similarity``: ``cos(P_i, P_j)`` between positions.

        None for a width-1 table (the seed's vector): its cosines are only signs, and the snapshot callback's
        position x epoch history already shows every value.
        """
        if self.table.shape[-1] == 1:
            return {}
        table = replica_of(self.table, replica)[: min(self.max_positions, n_positions)].detach().float().cpu()
        unit = nn.functional.normalize(table, dim=1)
        return {"table": table.numpy(), "cosine_similarity": (unit @ unit.T).numpy()}


class LearnedAbsolute(AbsoluteTable):
    """A trainable absolute table ``P in R^{max_positions x d_model}``: ``x_i <- x_i + P_i``.

    Initialised ``P_ij ~ N(0, init_std^2)``. With ``d_model = 1`` on the feed-forward model this is exactly
    the seed's trainable vector of ``length`` values. Positions past ``max_positions`` raise
    :class:`LengthError`. Source: Gehring et al., "Convolutional Sequence to Sequence Learning", ICML 2017
    (learned position embeddings).
    """

    option = "learned"

    def __init__(self, max_positions: int, d_model: int = 1, init_std: float = 1.0) -> None:
        super().__init__()
        self.max_positions = max_positions
        self.table = nn.Parameter((torch.randn(max_positions, d_model) * init_std).unsqueeze(0))


def sinusoid_table(length: int, d_model: int, base: float = 10000.0) -> Tensor:
    """``PE[pos, 2i] = sin(pos / base^(2i/d))``, ``PE[pos, 2i+1] = cos(pos / base^(2i/d))``, float32.

    Computed in float64 so that long tables stay accurate. An odd ``d_model`` ends with a sine column.
    """
    position = torch.arange(length, dtype=torch.float64)[:, None]
    column = torch.arange(d_model)
    angle = position / base ** ((2 * (column // 2)).double() / d_model)
    return torch.where(column % 2 == 0, angle.sin(), angle.cos()).float()


class Sinusoidal(AbsoluteTable):
    """The sinusoidal encoding of Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (Sec. 3.5)::

        PE(pos, 2i)   = sin(pos / 10000^(2i / d_model))
        PE(pos, 2i+1) = cos(pos / 10000^(2i / d_model)),    x_pos <- x_pos + PE(pos)

    Fixed by default (a buffer, not saved in checkpoints): it serves any length, the table is extended on
    demand; ``max_positions`` only sizes the initial table and what ``snapshot()`` records. With
    ``learnable=True`` the table is a Parameter of ``max_positions`` rows initialised from the sinusoid, and
    positions past it raise :class:`LengthError`. ``base`` is the paper's 10000.
    """

    option = "sinusoidal"

    def __init__(self, d_model: int, max_positions: int, learnable: bool = False, base: float = 10000.0) -> None:
        super().__init__()
        self.d_model, self.max_positions, self.learnable, self.base = d_model, max_positions, learnable, base
        table = sinusoid_table(max_positions, d_model, base).unsqueeze(0)
        if learnable:
            self.table = nn.Parameter(table)
        else:
            self.register_buffer("table", table, persistent=False)

    def rows(self, length: int) -> Tensor:
        if not self.learnable and length > self.table.shape[1]:
            grown = sinusoid_table(max(length, 2 * self.table.shape[1]), self.d_model, self.base)
            self.table = grown.unsqueeze(0).to(self.table.device)
        return super().rows(length)


class RoPE(PositionalEncoding):
    """Rotary position embedding of Su et al., "RoFormer: Enhanced Transformer with Rotary Position
    Embedding", 2021 (arXiv:2104.09864, Eq. 34).

    Each query and key of head dimension ``d`` is split into ``d/2`` consecutive pairs
    ``(x_{2i}, x_{2i+1})``; at position ``m`` pair ``i`` is rotated by the angle ``m * theta_i`` with
    ``theta_i = base^(-2i/d)``, ``i = 0..d/2-1``, ``base = 10000``::

        x'_{2i}   = x_{2i} cos(m theta_i) - x_{2i+1} sin(m theta_i)
        x'_{2i+1} = x_{2i} sin(m theta_i) + x_{2i+1} cos(m theta_i)

    The whole head dimension is rotated. Rotations preserve norms, and ``R_m q . R_n k = q . R_{n-m} k``
    depends only on ``n - m``. Any length is served (the angle cache grows on demand).
    """

    acts_on = "rotary"

    def __init__(
        self, d_model: int, n_heads: int, max_positions: int = DEFAULT_POSITIONS, base: float = 10000.0
    ) -> None:
        super().__init__()
        d_head = d_model // n_heads
        if d_model % n_heads or d_head % 2:
            raise ValueError(
                f"encoding=rope rotates pairs of the head dimension model.d_model/model.n_heads="
                f"{d_model}/{n_heads}; expected n_heads to divide d_model into an even head dimension"
            )
        self.max_positions, self.d_head, self.base = max_positions, d_head, base
        self.register_buffer("frequencies", self._frequencies(None).float(), persistent=False)
        self.register_buffer("angles", self._angles(max_positions, None), persistent=False)

    def _frequencies(self, device: torch.device | None) -> Tensor:
        """``theta_i = base^(-2i/d)``, float64."""
        return self.base ** (-torch.arange(0, self.d_head, 2, dtype=torch.float64, device=device) / self.d_head)

    def _angles(self, length: int, device: torch.device | None) -> Tensor:
        """``m * theta_i`` as ``(length, d_head/2)`` float32, computed in float64."""
        position = torch.arange(length, dtype=torch.float64, device=device)
        return (position[:, None] * self._frequencies(device)[None, :]).float()

    def angles_for(self, length: int) -> Tensor:
        """``m * theta_i`` for ``m < length``, ``(length, d_head/2)``; the cache grows on demand, and is rebuilt in
        float32 after ``module.to(dtype)`` (a bfloat16 cache would be off by up to 1 rad at position 512)."""
        if length > len(self.angles) or self.angles.dtype != torch.float32:
            self.angles = self._angles(max(length, 2 * len(self.angles)), self.angles.device)
        return self.angles[:length]

    def _rotate_pairs(self, x: Tensor) -> Tensor:
        """Each pair ``(x_2i, x_2i+1)`` as the complex number ``x_2i + i x_2i+1``, times ``e^(i m theta_i)``:
        the rotation of the docstring in one multiplication (float32 or float64; others via float32)."""
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        pairs = work.reshape(*x.shape[:-1], -1, 2)
        if pairs.storage_offset() % 2 or any(stride % 2 for stride in pairs.stride()[:-1]) or pairs.stride(-1) != 1:
            pairs = pairs.contiguous()  # view_as_complex needs whole, aligned pairs
        angles = self.angles_for(x.shape[-2]).to(work.dtype)
        rotation = torch.polar(torch.ones_like(angles), angles)
        return torch.view_as_real(torch.view_as_complex(pairs) * rotation).flatten(-2).to(x.dtype)

    def rotate(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return self._rotate_pairs(q), self._rotate_pairs(k)

    def snapshot_histograms(self, replica: int = 0) -> dict[str, Tensor]:
        """``log10_frequency``: ``log10 theta_i``, evenly spread over ``[-4 (d-2)/d, 0]``."""
        return {"log10_frequency": self.frequencies.log10().cpu()}

    def snapshot_maps(self, n_positions: int, replica: int = 0) -> dict[str, np.ndarray]:
        """``rotation``: ``cos(m theta_i)``, position ``m`` (rows) x frequency ``i`` (columns)."""
        return {"rotation": self.angles_for(min(self.max_positions, n_positions)).cos().cpu().numpy()}


class BiasEncoding(PositionalEncoding):
    """Base of the bias families: an image of the bias of each head over ``n x n`` positions."""

    acts_on = "bias"
    max_positions: int
    causal: bool

    _per_shape: tuple[tuple[int, int, torch.device], Tensor] | None = None

    def per_shape(self, n_query: int, n_key: int, device: torch.device, build: Callable[[], Tensor]) -> Tensor:
        """``build()``'s position-only tensor for this shape and device, cached for the last one asked."""
        key = (n_query, n_key, device)
        if self._per_shape is None or self._per_shape[0] != key:
            self._per_shape = (key, build())
        return self._per_shape[1]

    def relative_distance(self, n_query: int, n_key: int, device: torch.device | None) -> Tensor:
        """``i - j`` for query ``i`` and key ``j``, ``(n_query, n_key)`` int64.

        Queries are the last ``n_query`` of the ``n_key`` positions (as in decoding with a cache); for
        self-attention (``n_query == n_key``) query ``i`` is position ``i``.
        """
        query = torch.arange(n_key - n_query, n_key, device=device)
        key = torch.arange(n_key, device=device)
        return query[:, None] - key[None, :]

    @torch.no_grad()
    def snapshot_maps(self, n_positions: int, replica: int = 0) -> dict[str, np.ndarray]:
        """``bias``: each head's bias over ``n x n`` positions (query rows, key columns), one map per head,
        ``n = min(max_positions, n_positions)``."""
        n = min(self.max_positions, n_positions)
        return {"bias": replica_of(self.attention_bias(n, n), replica).float().cpu().numpy()}


def alibi_slopes(n_heads: int) -> list[float]:
    """ALiBi's head slopes (Press et al. 2022, Sec. 3 and the official implementation).

    For ``H`` a power of two, the geometric sequence ``m_h = 2^(-8h/H)``, ``h = 1..H``. Otherwise, with
    ``n`` the largest power of two below ``H``: the ``n`` slopes for ``n`` heads, followed by the first
    ``H - n`` of every other slope (``m_1, m_3, m_5, ...``) of the ``2n``-head sequence.
    """
    if n_heads & (n_heads - 1) == 0:
        return [2.0 ** (-8.0 * h / n_heads) for h in range(1, n_heads + 1)]
    n = 2 ** math.floor(math.log2(n_heads))
    return alibi_slopes(n) + alibi_slopes(2 * n)[0::2][: n_heads - n]


class ALiBi(BiasEncoding):
    """Attention with Linear Biases of Press et al., "Train Short, Test Long: Attention with Linear Biases
    Enables Input Length Extrapolation", ICLR 2022.

    Head ``h`` adds ``-m_h * (i - j)`` to the logit of query ``i`` and key ``j <= i``, slopes
    ``m_h = 2^(-8h/H)`` (see :func:`alibi_slopes` for ``H`` not a power of two). The bias is added to the
    scaled logits ``q.k / sqrt(d_head)`` and is not itself divided by ``sqrt(d_head)``. With
    ``causal=True`` future keys (``j > i``, masked by the model) get 0; the paper is causal only, so for a
    non-causal model this uses the symmetric ``-m_h * |i - j|``. Nothing is learned.
    """

    def __init__(self, n_heads: int, causal: bool = False, max_positions: int = DEFAULT_POSITIONS) -> None:
        super().__init__()
        self.n_heads, self.causal, self.max_positions = n_heads, causal, max_positions
        self.register_buffer("slopes", torch.tensor(alibi_slopes(n_heads))[:, None, None], persistent=False)

    def distance(self, n_query: int, n_key: int) -> Tensor:
        """``max(i - j, 0)`` (causal) or ``|i - j|`` as float, cached for the last shape and device."""

        def build() -> Tensor:
            distance = self.relative_distance(n_query, n_key, self.slopes.device)
            return (distance.clamp(min=0) if self.causal else distance.abs()).float()

        return self.per_shape(n_query, n_key, self.slopes.device, build)

    def attention_bias(self, n_query: int, n_key: int) -> Tensor:
        return (-self.slopes * self.distance(n_query, n_key)).unsqueeze(0)


def t5_bucket(relative_position: Tensor, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128) -> Tensor:
    """The T5 relative-position bucket of ``relative_position = j - i`` (key minus query), int64.

    Bidirectional: half the buckets per direction, keys before or at the query in ``[0, B/2)``, keys after
    it in ``[B/2, B)``. Unidirectional: all ``B`` buckets for keys at or before the query; later keys fall
    in bucket 0. Within a direction of ``b`` buckets, distances ``d < b/2`` get their own bucket ``d``;
    larger ones are log-spaced up to ``max_distance``,
    ``b/2 + floor(log(d / (b/2)) / log(max_distance / (b/2)) * (b - b/2))``, capped at ``b - 1``.
    Source: Raffel et al. 2020 (T5), Sec. 2.1, and its reference implementation.
    """
    if bidirectional:
        num_buckets //= 2
        offset = (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        offset = torch.zeros_like(relative_position)
        distance = (-relative_position).clamp(min=0)
    max_exact = num_buckets // 2
    log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    far = (max_exact + (log_ratio * (num_buckets - max_exact)).long()).clamp(max=num_buckets - 1)
    return offset + torch.where(distance < max_exact, distance, far)


class T5Bias(BiasEncoding):
    """The learned relative bias of Raffel et al., "Exploring the Limits of Transfer Learning with a Unified
    Text-to-Text Transformer", JMLR 2020 (T5), Sec. 2.1.

    Head ``h`` adds ``b[bucket(j - i), h]`` to the logit of query ``i`` and key ``j``, with a learned table
    ``b in R^{num_buckets x H}`` per replica (``N(0, init_std^2)`` at init) and :func:`t5_bucket`: exact
    buckets for small distances, log-spaced ones up to ``max_distance``, the last bucket beyond (so any length is
    served). Bidirectional (half the buckets per direction) unless ``causal``. One instance is shared by all
    layers, as in T5. ``snapshot()`` is the table ``b``.
    """

    def __init__(
        self,
        n_heads: int,
        causal: bool = False,
        num_buckets: int = 32,
        max_distance: int = 128,
        init_std: float = 0.1,
        max_positions: int = DEFAULT_POSITIONS,
    ) -> None:
        super().__init__()
        self.n_heads, self.causal, self.max_positions = n_heads, causal, max_positions
        self.num_buckets, self.max_distance = num_buckets, max_distance
        table = nn.Embedding(num_buckets, n_heads).weight.detach()  # draws as the nn.Embedding T5 uses
        self.relative_bias = nn.Parameter(nn.init.normal_(table, std=init_std).unsqueeze(0))

    def buckets(self, n_query: int, n_key: int) -> Tensor:
        """The ``(n_query, n_key)`` bucket indices, cached for the last shape and device."""
        device = self.relative_bias.device

        def build() -> Tensor:
            relative = -self.relative_distance(n_query, n_key, device)
            return t5_bucket(relative, not self.causal, self.num_buckets, self.max_distance)

        return self.per_shape(n_query, n_key, device, build)

    def attention_bias(self, n_query: int, n_key: int) -> Tensor:
        # Index the transposed (R, heads, buckets) table: the result is (R, heads, n_query, n_key), contiguous.
        return self.relative_bias.transpose(1, 2)[:, :, self.buckets(n_query, n_key)]

    snapshot_rows = "bucket"

    def snapshot(self) -> Tensor:
        return self.relative_bias.detach().cpu().clone()
