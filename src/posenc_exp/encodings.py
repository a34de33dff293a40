"""Positional encodings behind one interface that says where each family acts.

Every encoding is an ``nn.Module`` with a class attribute ``acts_on``:

- ``"input"``: added once to the input embeddings, ``x_i <- x_i + p_i`` (``forward(x, positions)``, ``x`` is
  ``(R or 1, batch, length, d_model)``): :class:`NoPE`, :class:`LearnedAbsolute`, :class:`Sinusoidal`;
- ``"rotary"``: rotates queries and keys in every attention layer (``rotate(q, k, positions)``, both
  ``(R, batch, heads, length, d_head)``): :class:`RoPE` (and ``posenc_exp.recent_encodings.XPos``);
- ``"bias"``: an additive bias on the attention logits (``attention_bias(n_query, n_key, query_positions,
  key_positions)`` returns a float ``(R or 1, heads, n_query, n_key)`` tensor, meant as the float ``attn_mask`` of
  ``torch.nn.functional.scaled_dot_product_attention``, i.e. added to the already scaled logits
  ``q.k / sqrt(d_head)``; a causal model adds its causal mask itself): :class:`ALiBi`, :class:`T5Bias`.
  Bias families are built once and shared by every layer; call ``attention_bias`` once per forward pass
  and hand the result to all layers;
- ``"contextual"``: a bias computed in each layer from that layer's queries and keys
  (``contextual_bias(q, k, layer)``): ``posenc_exp.recent_encodings.CoPE``.

Positions: the encoding supplies the positions of a forward pass, ``positions(length, device)``: a tensor
``(R or 1, length)`` of integer or float positions shared by the batch (replica axis first, 1 when the
replicas share them), or ``None``, which stands for the ordinary ``0..length-1`` (the default; it lets the
families use the caches they keep for it). The model asks once per forward pass and hands the result to
every hook, whose ``positions`` arguments accept the same (``None``, or ``(R or 1, length)``).

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

    def positions(self, length: int, device: torch.device) -> Tensor | None:
        """The positions of a forward pass over ``length`` tokens, ``(R or 1, length)``, or ``None`` for the
        ordinary ``0..length-1`` (the default)."""
        return None

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """Input families: ``x`` is ``(R or 1, batch, length, d_model)``; returns ``x`` with positions added."""
        return x

    def rotate(self, q: Tensor, k: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Rotary families: queries and keys ``(..., heads, length, d_head)`` (``(R, batch, heads, length,
        d_head)`` with explicit ``positions``), rotated by position."""
        raise NotImplementedError(f"{type(self).__name__} acts on '{self.acts_on}', not on queries and keys")

    def attention_bias(
        self, n_query: int, n_key: int, query_positions: Tensor | None = None, key_positions: Tensor | None = None
    ) -> Tensor:
        """Bias families: the float ``(R or 1, heads, n_query, n_key)`` bias added to the attention logits;
        positions ``(R or 1, n_query)`` and ``(R or 1, n_key)``, or ``None`` for the ordinary ones (queries the
        last ``n_query`` of ``0..n_key-1``)."""
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
        return self.table if length == self.table.shape[1] else self.table[:, :length]

    def rows_at(self, positions: Tensor) -> Tensor:
        """The rows at integer ``positions`` ``(R or 1, length)``: ``(R or 1, length, d_model)``. Positions must
        lie in the table (a wrapper that draws them checks its range against ``max_positions`` in its config)."""
        if positions.is_floating_point():
            raise ValueError(f"encoding={self.option} has one row per integer position; got float positions")
        n = max(len(self.table), len(positions))
        index = positions.long().expand(n, -1)[..., None].expand(-1, -1, self.table.shape[-1])
        return self.table.expand(n, -1, -1).gather(1, index)

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        rows = self.rows(x.shape[-2]) if positions is None else self.rows_at(positions)
        return x + rows.unsqueeze(1).to(x.dtype)

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


def sinusoid(positions: Tensor, d_model: int, base: float = 10000.0) -> Tensor:
    """``PE[pos, 2i] = sin(pos / base^(2i/d))``, ``PE[pos, 2i+1] = cos(pos / base^(2i/d))`` at any (integer or
    float) ``positions`` ``(..., length)``: ``(..., length, d_model)`` float32.

    Computed in float64 so that long tables stay accurate. An odd ``d_model`` ends with a sine column.
    """
    column = torch.arange(d_model, device=positions.device)
    angle = positions.double()[..., None] / base ** ((2 * (column // 2)).double() / d_model)
    return torch.where(column % 2 == 0, angle.sin(), angle.cos()).float()


def sinusoid_table(length: int, d_model: int, base: float = 10000.0) -> Tensor:
    """:func:`sinusoid` at positions ``0..length-1``: ``(length, d_model)``."""
    return sinusoid(torch.arange(length), d_model, base)


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

    def rows_at(self, positions: Tensor) -> Tensor:
        """The fixed sinusoid is computed at the positions themselves (any, integer or float); a learnable table
        is indexed."""
        return super().rows_at(positions) if self.learnable else sinusoid(positions, self.d_model, self.base)


def rope_frequencies(
    d_head: int, base: float, scaling: str = "none", factor: float = 1.0, length: int = 1, trained_length: int = 1
) -> tuple[Tensor, float]:
    """RoPE's frequencies ``theta_i``, float64 ``(d_head/2,)``, and the attention factor ``m`` that multiplies
    queries and keys, for a forward pass over ``length`` positions of a model trained on ``trained_length``,
    extended by ``factor = s`` with ``scaling``:

    - ``none``: ``theta_i = base^(-2i/d)``, ``m = 1``;
    - ``linear`` (position interpolation, Chen et al., "Extending Context Window of Large Language Models via
      Positional Interpolation", 2023): ``theta_i / s`` (positions ``n -> n / s``);
    - ``ntk`` (NTK-aware base scaling, bloc97 2023, in the "dynamic" form of HF transformers'
      ``_compute_dynamic_ntk_parameters``): ``base' = base * (s * L / L_train - (s - 1))^(d / (d - 2))`` with
      ``L = max(length, L_train)``, so ``base' = base`` at the training length;
    - ``yarn`` (Peng et al., "YaRN: Efficient Context Window Extension of Large Language Models", 2023, Sec. 3.2-3.4,
      as HF's ``_compute_yarn_parameters`` with ``beta_fast = 32``, ``beta_slow = 1``, truncation on):
      ``theta_i = theta_i / s * (1 - g_i) + theta_i * g_i`` with the ramp ``g_i = 1 - clamp((i - lo) / (hi - lo),
      0, 1)``, ``lo = floor(c(32))``, ``hi = ceil(c(1))`` (clipped to ``[0, d - 1]``), ``c(r) = d log(L_train /
      (2 pi r)) / (2 log base)`` the dimension whose wavelength fits ``r`` times in ``L_train``; and the attention
      temperature ``m = 0.1 ln s + 1`` on queries and keys (logits ``* m^2``, i.e. ``sqrt(1/t) = 0.1 ln s + 1``).
    """
    exponent = torch.arange(0, d_head, 2, dtype=torch.float64) / d_head
    theta = base**-exponent
    if scaling == "linear":
        return theta / factor, 1.0
    if scaling == "ntk":
        seen = max(length, trained_length)
        scaled_base = base * (factor * seen / trained_length - (factor - 1)) ** (d_head / (d_head - 2))
        return scaled_base**-exponent, 1.0
    if scaling == "yarn":

        def correction(rotations: float) -> float:
            return d_head * math.log(trained_length / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low, high = max(math.floor(correction(32)), 0), min(math.ceil(correction(1)), d_head - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(d_head // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
        keep = 1 - ramp  # 1: the high-frequency dimensions, extrapolated as trained
        attention = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
        return theta / factor * (1 - keep) + theta * keep, attention
    return theta, 1.0


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

    Beyond the training length: ``scaling`` (``none``, ``linear``, ``ntk``, ``yarn``; see :func:`rope_frequencies`)
    with ``scaling_factor`` changes the frequencies (and for YaRN scales queries and keys) of the forward passes
    that ``scaling_lengths`` names: ``longer``, evaluation passes longer than the training length; ``all``, every
    pass, training included (as when fine-tuning with position interpolation). The training length is the
    persistent buffer ``trained_length``: the longest sequence a training pass rotated, kept by checkpoints
    (0 before any training: then ``longer`` scales nothing).
    """

    acts_on = "rotary"
    option: ClassVar[str] = "rope"

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        max_positions: int = DEFAULT_POSITIONS,
        base: float = 10000.0,
        scaling: str = "none",
        scaling_factor: float = 1.0,
        scaling_lengths: str = "longer",
    ) -> None:
        super().__init__()
        d_head = d_model // n_heads
        if d_model % n_heads or d_head % 2:
            raise ValueError(
                f"encoding={self.option} rotates pairs of the head dimension model.d_model/model.n_heads="
                f"{d_model}/{n_heads}; expected n_heads to divide d_model into an even head dimension"
            )
        self.max_positions, self.d_head, self.base = max_positions, d_head, base
        self.scaling, self.scaling_factor, self.scaling_lengths = scaling, scaling_factor, scaling_lengths
        self.register_buffer("frequencies", self._frequencies(None).float(), persistent=False)
        self.register_buffer("angles", self._angles(max_positions, None), persistent=False)
        self.register_buffer("trained_length", torch.zeros((), dtype=torch.long))

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

    def scaled(self, length: int) -> tuple[Tensor, float] | None:
        """The scaled frequencies and attention factor (:func:`rope_frequencies`) for a pass over ``length``
        positions, or ``None`` when this pass is not scaled. Training passes record their length first."""
        if self.training:
            self.trained_length.clamp_(min=length)
        if self.scaling == "none":
            return None
        if self.scaling_lengths == "longer":
            trained = int(self.trained_length)  # evaluation with scaling only: one host read per layer
            if self.training or trained == 0 or length <= trained:
                return None
        trained = max(int(self.trained_length), 1)
        return rope_frequencies(self.d_head, self.base, self.scaling, self.scaling_factor, length, trained)

    def rotation(self, length: int, positions: Tensor | None, device: torch.device) -> tuple[Tensor, float]:
        """The angles ``n * theta_i`` of this pass, ``(length, d/2)`` for the ordinary positions (the cache, when
        unscaled) or ``(R or 1, length, d/2)`` for explicit ones, float32, and the attention factor."""
        scaled = self.scaled(length)
        if scaled is None and positions is None:
            return self.angles_for(length), 1.0
        theta, attention = scaled if scaled is not None else (self._frequencies(device), 1.0)
        where = torch.arange(length, device=device) if positions is None else positions
        return (where.double()[..., None] * theta.to(device)).float(), attention

    def _rotate_pairs(self, x: Tensor, angles: Tensor, scale: Tensor | float = 1.0) -> Tensor:
        # ``scale``: a number, or a tensor of ``angles``' shape (xPos's per-position, per-pair scale).
        """Each pair ``(x_2i, x_2i+1)`` as the complex number ``x_2i + i x_2i+1``, times ``scale * e^(i n theta_i)``:
        the rotation of the docstring in one multiplication (float32 or float64; others via float32). ``angles``
        ``(length, d/2)``, or ``(R or 1, length, d/2)`` for ``x`` ``(R, batch, heads, length, d)``."""
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        pairs = work.reshape(*x.shape[:-1], -1, 2)
        if pairs.storage_offset() % 2 or any(stride % 2 for stride in pairs.stride()[:-1]) or pairs.stride(-1) != 1:
            pairs = pairs.contiguous()  # view_as_complex needs whole, aligned pairs
        angles = angles.to(work.dtype)
        magnitude = scale * torch.ones_like(angles) if isinstance(scale, float) else scale.to(work.dtype)
        if angles.ndim == 3:
            shape = (len(angles), *([1] * (x.ndim - 3)), *angles.shape[1:])
            angles, magnitude = angles.view(shape), magnitude.view(len(magnitude), *shape[1:])
        rotation = torch.polar(magnitude, angles)
        return torch.view_as_real(torch.view_as_complex(pairs) * rotation).flatten(-2).to(x.dtype)

    def rotate(self, q: Tensor, k: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        angles, attention = self.rotation(q.shape[-2], positions, q.device)
        return self._rotate_pairs(q, angles, attention), self._rotate_pairs(k, angles, attention)

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

    def distances(
        self,
        n_query: int,
        n_key: int,
        query_positions: Tensor | None,
        key_positions: Tensor | None,
        device: torch.device,
    ) -> Tensor | None:
        """``i - j`` between explicit positions, ``(R or 1, n_query, n_key)`` (integer or float, as the positions),
        or ``None`` when both are the ordinary ones (the families then use their cache). A missing side is the
        ordinary one (queries the last ``n_query`` of ``0..n_key-1``)."""
        if query_positions is None and key_positions is None:
            return None
        if key_positions is None:
            key_positions = torch.arange(n_key, device=device)[None]
        if query_positions is None:
            query_positions = torch.arange(n_key - n_query, n_key, device=device)[None]
        return query_positions[:, :, None] - key_positions[:, None, :]

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

    def attention_bias(
        self, n_query: int, n_key: int, query_positions: Tensor | None = None, key_positions: Tensor | None = None
    ) -> Tensor:
        distance = self.distances(n_query, n_key, query_positions, key_positions, self.slopes.device)
        if distance is None:
            return (-self.slopes * self.distance(n_query, n_key)).unsqueeze(0)
        distance = (distance.clamp(min=0) if self.causal else distance.abs()).to(self.slopes.dtype)
        return -self.slopes * distance.unsqueeze(1)


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

    def attention_bias(
        self, n_query: int, n_key: int, query_positions: Tensor | None = None, key_positions: Tensor | None = None
    ) -> Tensor:
        # Index the transposed (R, heads, buckets) table: the result is (R, heads, n_query, n_key), contiguous.
        table = self.relative_bias.transpose(1, 2)
        distance = self.distances(n_query, n_key, query_positions, key_positions, table.device)
        if distance is None:
            return table[:, :, self.buckets(n_query, n_key)]
        buckets = t5_bucket(-distance.round().long(), not self.causal, self.num_buckets, self.max_distance)
        n = max(len(table), len(buckets))
        index = buckets.expand(n, -1, -1).reshape(n, 1, -1).expand(-1, self.n_heads, -1)
        return table.expand(n, -1, -1).gather(2, index).view(n, self.n_heads, n_query, n_key)

    snapshot_rows = "bucket"

    def snapshot(self) -> Tensor:
        return self.relative_bias.detach().cpu().clone()
