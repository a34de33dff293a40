"""Positional encodings of 2022-2024 for length generalization, on the interface of :mod:`posenc_exp.encodings`.

- :class:`KERPLE` (bias): ``-r1 log(1 + r2 |i - j|)``, learned per head (Chi et al. 2022);
- :class:`FIRE` (bias): a learned MLP of the normalised log distance (Li et al. 2023);
- :class:`XPos` (rotary): RoPE with an exponential decay of queries and keys (Sun et al. 2022);
- :class:`CoPE` (contextual): positions counted by gates on the queries and keys of each layer (Golovneva et
  al. 2024);
- :class:`Randomized`: any other encoding, trained on sorted random positions drawn from ``0..M-1`` (Ruoss et
  al. 2023).

RoPE's extension methods (position interpolation, NTK-aware scaling, YaRN) are options of
:class:`posenc_exp.encodings.RoPE` (``encoding.scaling``). Replicas: every learned tensor has a leading replica
axis created with size 1 (``posenc_exp.models.layers.stack_replicas`` stacks them).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from posenc_exp.encodings import DEFAULT_POSITIONS, BiasEncoding, NoPE, PositionalEncoding, RoPE
from posenc_exp.errors import LengthError
from posenc_exp.models.layers import Linear


class KERPLE(BiasEncoding):
    """The logarithmic KERPLE bias of Chi et al., "KERPLE: Kernelized Relative Positional Embedding for Length
    Extrapolation", NeurIPS 2022 (Eq. for the "log" variant)::

        b_h(i, j) = -r1_h * log(1 + r2_h * |i - j|),     r1_h, r2_h > 0 learned per head

    added to the scaled logits. As in the authors' reference code (KERPLE's ``ParallelKerpleLog``):
    ``r1 ~ U(0, 2)``, ``r2 ~ U(0, 1)`` at init, both kept ``>= eps = 0.01`` (here by clamping in the forward
    pass, where the reference clamps the stored values), future keys of a causal model get distance 0 (the model
    masks them). A non-causal model gets the symmetric ``|i - j|``. One instance is shared by all layers (as the
    lab's other bias families; the reference has one per layer). Outside the training length the bias keeps
    growing logarithmically.
    """

    snapshot_rows = "head"

    def __init__(
        self, n_heads: int, causal: bool = False, eps: float = 0.01, max_positions: int = DEFAULT_POSITIONS
    ) -> None:
        super().__init__()
        self.n_heads, self.causal, self.eps, self.max_positions = n_heads, causal, eps, max_positions
        self.r1 = nn.Parameter((torch.rand(n_heads) * 2).unsqueeze(0))  # (R, heads); the reference's bias_p
        self.r2 = nn.Parameter(torch.rand(n_heads).unsqueeze(0))  # the reference's bias_a

    def attention_bias(
        self, n_query: int, n_key: int, query_positions: Tensor | None = None, key_positions: Tensor | None = None
    ) -> Tensor:
        device = self.r1.device
        distance = self.distances(n_query, n_key, query_positions, key_positions, device)
        if distance is None:  # the ordinary positions: (n_query, n_key), cached
            distance = self.per_shape(n_query, n_key, device, lambda: self.relative_distance(n_query, n_key, device))
        distance = (distance.clamp(min=0) if self.causal else distance.abs()).to(self.r1.dtype)
        r1, r2 = (r.clamp(min=self.eps)[:, :, None, None] for r in (self.r1, self.r2))
        return -r1 * torch.log1p(r2 * (distance if distance.ndim == 2 else distance.unsqueeze(1)))

    def snapshot(self) -> Tensor:
        """``(R, heads, 2)``: each head's ``(r1, r2)`` as used (after the clamp)."""
        return torch.stack([self.r1, self.r2], dim=-1).clamp(min=self.eps).detach().cpu().clone()


class FIRE(BiasEncoding):
    """Functional Interpolation for Relative Positions of Li et al., "Functional Interpolation for Relative
    Positions Improves Long Context Transformers", ICLR 2024 (arXiv:2310.04418, Eq. 4 and its appendix code)::

        b(i, j) = f(psi(i - j) / psi(max(i, L))),    psi(x) = log(|c x| + 1)

    ``f: R -> R^heads`` a learned MLP (``Linear(1, mlp_width)``, ReLU, ``Linear(mlp_width, heads)``), ``c`` learned
    (init ``init_c = 0.1``), the threshold ``L = |l * init_threshold|`` with ``l`` learned (init 1) and
    ``init_threshold = 512`` fixed, and ``eps = 1e-6`` added to the denominator, as in the paper's code. Queries
    shorter than ``L`` are normalised by ``psi(L)``, so short sequences see unnormalised (small) inputs; past ``L``
    the input stays in ``[0, 1]`` at any length (the interpolation the paper argues for). The paper's model is
    causal; a non-causal model gets the same formula, which (through ``|c x|``) is symmetric in ``i - j``. One
    instance, shared by all layers.
    """

    def __init__(
        self,
        n_heads: int,
        causal: bool = False,
        mlp_width: int = 32,
        init_c: float = 0.1,
        init_threshold: float = 512.0,
        eps: float = 1e-6,
        max_positions: int = DEFAULT_POSITIONS,
    ) -> None:
        super().__init__()
        self.n_heads, self.causal, self.eps, self.max_positions = n_heads, causal, eps, max_positions
        self.mlp = nn.Sequential(Linear(1, mlp_width), nn.ReLU(), Linear(mlp_width, n_heads))
        self.c = nn.Parameter(torch.full((1, 1), float(init_c)))
        self.threshold_multiplier = nn.Parameter(torch.ones(1, 1))
        self.register_buffer("init_threshold", torch.tensor(float(init_threshold)), persistent=False)

    def normalized_distance(self, query: Tensor, key: Tensor) -> Tensor:
        """``psi(i - j) / (psi(max(i, L)) + eps)`` for query positions ``(P, n_query)`` and key positions ``(P,
        n_key)``: ``(R or P, n_query, n_key)``."""
        c = self.c[:, :, None]  # (R, 1, 1)
        relative = (query[:, :, None] - key[:, None, :]).to(c.dtype)
        threshold = (self.threshold_multiplier * self.init_threshold).abs()[:, :, None]
        normalizer = torch.maximum(query.to(c.dtype)[:, :, None], threshold)
        return torch.log((c * relative).abs() + 1) / (torch.log((c * normalizer).abs() + 1) + self.eps)

    def attention_bias(
        self, n_query: int, n_key: int, query_positions: Tensor | None = None, key_positions: Tensor | None = None
    ) -> Tensor:
        device = self.c.device
        key = torch.arange(n_key, device=device)[None] if key_positions is None else key_positions
        query = query_positions
        if query is None:
            query = torch.arange(n_key - n_query, n_key, device=device)[None]
        bias = self.mlp(self.normalized_distance(query, key).unsqueeze(-1))  # (R, n_query, n_key, heads)
        return bias.permute(0, 3, 1, 2)


class XPos(RoPE):
    """xPos of Sun et al., "A Length-Extrapolatable Transformer", 2022 (arXiv:2212.10554, Eq. 9-11), as in its
    torchscale reference (``torchscale/component/xpos_relative_position.py``).

    RoPE's rotation (:class:`posenc_exp.encodings.RoPE`, ``theta_i = base^(-2i/d)``) with pair ``i`` of the query
    at position ``n`` scaled by ``zeta_i^(n / scale_base)`` and of the key at ``m`` by ``zeta_i^(-m / scale_base)``,
    ``zeta_i = (2i + gamma d) / ((1 + gamma) d)`` (``gamma = 0.4``, ``scale_base = 512`` in the paper), so that
    ``q_n . k_m`` is scaled by ``zeta_i^((n - m) / scale_base)``: a decay with the distance on top of the rotation.
    As in torchscale, the exponent's positions are centred (shifted by ``ceil((first + last + 1) / 2)``, which
    cancels in ``n - m``) so that long sequences do not overflow. The paper is causal; in a non-causal model keys
    after the query (``m > n``) are amplified by the same formula. Outside the training length the decay keeps
    going; RoPE's ``scaling`` options are not offered for xPos.
    """

    option = "xpos"

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        max_positions: int = DEFAULT_POSITIONS,
        base: float = 10000.0,
        scale_base: float = 512.0,
        gamma: float = 0.4,
    ) -> None:
        super().__init__(d_model, n_heads, max_positions, base)
        self.scale_base, self.gamma = scale_base, gamma
        d = self.d_head
        zeta = (torch.arange(0, d, 2, dtype=torch.float64) + gamma * d) / ((1 + gamma) * d)
        self.register_buffer("zeta", zeta, persistent=False)

    def decay(self, length: int, positions: Tensor | None, device: torch.device) -> Tensor:
        """``zeta_i^(n / scale_base)`` at the centred positions: ``(length, d/2)`` or ``(R or 1, length, d/2)``."""
        where = torch.arange(length, device=device) if positions is None else positions
        where = where.double()
        centred = where - torch.ceil((where[..., :1] + where[..., -1:] + 1) / 2)
        return (self.zeta.to(device) ** (centred[..., None] / self.scale_base)).float()

    def rotate(self, q: Tensor, k: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        angles, _ = self.rotation(q.shape[-2], positions, q.device)
        scale = self.decay(q.shape[-2], positions, q.device)
        return self._rotate_pairs(q, angles, scale), self._rotate_pairs(k, angles, 1 / scale)


class CoPE(PositionalEncoding):
    """Contextual Position Encoding of Golovneva et al., "Contextual Position Encoding: Learning to Count What's
    Important", 2024 (arXiv:2405.18719, Eq. 3-5 and the paper's code listing).

    In each layer, from that layer's queries and keys (per head, ``d = d_head``)::

        g_ij = sigmoid(q_i . k_j / sqrt(d))            (gates; 0 for masked keys j > i)
        p_ij = sum_{k = j..i} g_ik                     (contextual position of key j for query i)
        p_ij <- min(p_ij, num_embeddings - 1)
        z_i[p] = q_i . e[p],   b_ij = z_i[ceil p_ij] (p_ij - floor p_ij) + z_i[floor p_ij] (1 - p_ij + floor p_ij)

    and ``b_ij`` is added to the scaled logits. The position embeddings ``e in R^{num_embeddings x d}`` are learned,
    one table per layer shared by the heads, zero at init, as in the paper's code (where the gates also use the
    scaled logits). So each layer has its own tensor: ``(R, depth, d_head, num_embeddings)``. The paper's model is
    causal (the sum runs from key ``j`` up to query ``i``); a non-causal model is refused. Contextual positions
    never exceed ``num_embeddings - 1``, whatever the sequence length: that cap is what CoPE does outside the
    training length. The gates cost one extra ``Q K^T`` product per layer, and the bias is per example
    (``(R, B, H, L, L)``).
    """

    acts_on = "contextual"
    snapshot_rows = "layer"

    def __init__(self, d_model: int, n_heads: int, depth: int, causal: bool = True, num_embeddings: int = 64) -> None:
        super().__init__()
        if not causal:
            raise ValueError("encoding=cope needs a causal model (model.causal=true)")
        self.num_embeddings, self.causal = num_embeddings, causal
        self.embeddings = nn.Parameter(torch.zeros(1, depth, d_model // n_heads, num_embeddings))

    def contextual_bias(self, q: Tensor, k: Tensor, layer: int, causal: bool = True) -> Tensor:
        """Layer ``layer``'s bias ``b`` from queries and keys ``(R, B, H, L, d_head)``: ``(R, B, H, L, L)``."""
        if not causal:
            raise ValueError("encoding=cope needs a causal model (model.causal=true)")
        n_query, n_key = q.shape[-2], k.shape[-2]
        allowed = torch.ones(n_query, n_key, dtype=torch.bool, device=q.device).tril(n_key - n_query)
        gates = torch.sigmoid(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])) * allowed
        position = gates.flip(-1).cumsum(-1).flip(-1).clamp(max=self.num_embeddings - 1)
        table = self.embeddings[:, layer].to(q.dtype)  # (R, d_head, num_embeddings)
        logits = torch.einsum("rbhld,rdp->rbhlp", q, table.expand(len(q), -1, -1))
        floor = position.floor()
        weight = position - floor
        low = logits.gather(-1, floor.long())
        high = logits.gather(-1, position.ceil().long())
        return high * weight + low * (1 - weight)

    def snapshot(self) -> Tensor:
        """The position embeddings, ``(R, depth, d_head * num_embeddings)``."""
        return self.embeddings.detach().flatten(2).cpu().clone()


def _mix32(x: Tensor) -> Tensor:
    """The "lowbias32" integer hash (C. Wellons, "Prospecting for Hash Functions", 2018) of int64 values in
    ``[0, 2^32)``, with every product kept below ``2^63`` (16-bit halves), so it is exact on every device."""
    mask = 0xFFFFFFFF

    def times(value: Tensor, constant: int) -> Tensor:
        return ((((value >> 16) * constant) & 0xFFFF) << 16) + (value & 0xFFFF) * constant & mask

    x = x ^ (x >> 16)
    x = times(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = times(x, 0x846CA68B)
    return x ^ (x >> 16)


class Randomized(PositionalEncoding):
    """Randomized positional encodings of Ruoss et al., "Randomized Positional Encodings Boost Length
    Generalization of Transformers", ACL 2023: a wrapped encoding ``base`` (any option of ``conf/encoding`` that
    takes positions) used at positions drawn per batch::

        training:   positions = sort(a uniform random subset of L of {0, ..., M-1}),    M = position_range
        evaluation: positions = 0..L-1 (eval_positions=ordinary), or drawn as in training (eval_positions=random:
                    what the paper's code does, drawing at every call, test batches included)

    so that the positions a model sees in training already span the range of the longer evaluation sequences.
    The draw is a counter-based hash of ``(replica key, step, position)`` (:func:`_mix32`), no global RNG and no
    host sync: each of the ``M`` candidates gets a hash value, and the ``L`` smallest are taken (a uniform subset),
    then sorted. The replica key is drawn at construction from the run's seed (a non-trained parameter with a
    replica axis, so replica ``k`` draws exactly as the single run ``seed + k``); ``step`` is a persistent buffer,
    counting training forward passes, kept by checkpoints. Positions are shared by the batch, one draw per
    replica, ``(R, L)``. A sequence longer than ``M`` is refused (:class:`LengthError`). ``M`` defaults
    (``position_range=None``) to ``max_positions``, the longest evaluation input.
    """

    def __init__(
        self,
        base: PositionalEncoding,
        max_positions: int = DEFAULT_POSITIONS,
        position_range: int | None = None,
        eval_positions: str = "ordinary",
    ) -> None:
        super().__init__()
        if isinstance(base, (Randomized, CoPE, NoPE)):
            raise ValueError(f"encoding=randomized cannot wrap {type(base).__name__}, which does not use positions")
        self.base, self.max_positions, self.eval_positions = base, max_positions, eval_positions
        self.position_range = max_positions if position_range is None else position_range
        self.acts_on = base.acts_on  # type: ignore[misc]  # the wrapped family's
        self.snapshot_rows = base.snapshot_rows  # type: ignore[misc]
        self.key = nn.Parameter(torch.randint(0, 2**24, (1, 1)).float(), requires_grad=False)  # exact in float32
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def draw(self, length: int, device: torch.device) -> Tensor:
        """This step's sorted random positions, ``(R, length)`` int64."""
        if length > self.position_range:
            raise LengthError(
                f"encoding=randomized draws positions from 0..encoding.position_range-1={self.position_range - 1} "
                f"and cannot place a sequence of length {length}; raise encoding.position_range"
            )
        mask = 0xFFFFFFFF
        stream = _mix32((_mix32(self.key.long()) ^ (self.step & mask)) & mask)  # (R, 1)
        candidates = _mix32(torch.arange(self.position_range, device=device))
        scores = _mix32(stream ^ candidates)  # (R, M)
        return scores.topk(length, dim=-1, largest=False).indices.sort(dim=-1).values

    def positions(self, length: int, device: torch.device) -> Tensor | None:
        if self.training:
            drawn = self.draw(length, device)
            self.step += 1
            return drawn
        return self.draw(length, device) if self.eval_positions == "random" else None

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        return self.base(x, positions)

    def rotate(self, q: Tensor, k: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.base.rotate(q, k, positions)

    def attention_bias(
        self, n_query: int, n_key: int, query_positions: Tensor | None = None, key_positions: Tensor | None = None
    ) -> Tensor:
        return self.base.attention_bias(n_query, n_key, query_positions, key_positions)

    def snapshot(self) -> Tensor | None:
        return self.base.snapshot()

    def snapshot_histograms(self, replica: int = 0) -> dict[str, Tensor]:
        return self.base.snapshot_histograms(replica)

    def snapshot_maps(self, n_positions: int, replica: int = 0) -> dict[str, Any]:
        return self.base.snapshot_maps(n_positions, replica)
