"""A stack of self-attention layers with switches for softmax, residuals, normalisation, MLP and causality.

Attention (Vaswani et al., "Attention Is All You Need", NeurIPS 2017, Sec. 3.2), per head ``h`` with
``d_head = d_model / H``::

    Q = X W_q,  K = X W_k,  V = X W_v                       (each (L, d_head) per head)
    S = Q K^T / sqrt(d_head) + B                            (B: the encoding's bias, or 0)
    softmax on:   A = softmax(S + M)                        (M: 0, or -inf above the diagonal if causal)
    softmax off:  A_ij = S_ij [j attended by i] / n_i       (n_i = number of keys query i attends to)
    head_h = A V,   Attn(X) = concat_h(head_h) W_o

``position_only=True`` (the depth study's control) computes queries and keys from the positions instead of
the content, ``Q = P W_q``, ``K = P W_k`` with ``P`` the fixed sinusoid of positions ``0..L-1`` (Vaswani et
al. 2017, Sec. 3.5), while ``V = X W_v`` still reads the content: ``A`` no longer depends on ``X``, so without
residual, MLP and norm each layer is linear in ``X`` (plus the bias terms of ``W_v`` and ``W_o``).

Rotary encodings rotate ``Q`` and ``K`` of every layer before ``S``; input encodings are added to the
embedded input once; bias encodings give ``B`` (one module shared by all layers, computed once per forward);
contextual encodings (CoPE) give each layer its own ``B`` from that layer's ``Q`` and ``K``. The positions of a
forward pass are the encoding's (``encoding.positions(L, device)``, asked once per forward and handed to every
hook; ``None`` for the ordinary ``0..L-1``).

The softmax-off normalisation divides each row by the number of keys it attends to (``L``, or ``i + 1``
when causal), so that the output scale does not grow with the sequence length; the map stays a cubic
polynomial of ``X`` (when ``B = 0``), the object of the depth study's "linear collapse" question.

A layer (Xiong et al., "On Layer Normalization in the Transformer Architecture", ICML 2020) with
sublayers ``F`` in (attention, MLP), ``N`` a LayerNorm:

- ``norm="pre"``:  ``X <- X + F(N(X))``, and a final ``N`` before the read-out;
- ``norm="post"``: ``X <- N(X + F(X))`` (the original Transformer);
- ``norm="none"``: ``X <- X + F(X)``.

``residual=False`` drops the ``X +`` term (``F(N(X))``, ``N(F(X))`` or ``F(X)``). The MLP is
``W_2 GELU(W_1 x)`` with hidden width ``mlp_ratio * d_model``.

Inputs: scalars ``(R or 1, B, L)`` (regression tasks, embedded by ``Linear(1, d_model)``) when ``vocab_size``
is ``None``, else token ids ``(R or 1, B, L)`` (embedded by an ``Embedding(vocab_size, d_model)``). Read-out:
regression, a scalar ``Linear(d_model, 1)`` of the last position's state (the position that has seen the
whole window, also under a causal mask), ``(R, B)``; tokens, per-position logits ``(R, B, L, vocab_size)``.

Replicas: every weight has a leading replica axis ``R`` (``posenc_exp.models.layers``); activations are
``(R, B, L, d_model)``, and attention folds the replica axis into SDPA's batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from posenc_exp.encodings import PositionalEncoding, sinusoid_table
from posenc_exp.models.layers import Embedding, LayerNorm, Linear
from posenc_exp.schemas.model import NORMS


@dataclass
class Internals:
    """What :meth:`AttentionStack.forward` returns with ``return_internals=True``, besides the output.

    ``inputs``: the embedded input with an input encoding added, ``(R, B, L, d_model)``;
    ``layers``: each layer's output, ``depth`` tensors ``(R, B, L, d_model)`` (before the final norm);
    ``attention``: each layer's attention matrix ``A``, ``depth`` tensors ``(R, B, H, L, L)``
    (probabilities with softmax on; the normalised scores with softmax off).
    """

    inputs: Tensor
    layers: list[Tensor]
    attention: list[Tensor]


def causal_mask(n_query: int, n_key: int, device: torch.device) -> Tensor:
    """Boolean ``(n_query, n_key)``, True where query ``i`` may attend key ``j``: ``j <= i + n_key - n_query``."""
    return torch.ones(n_query, n_key, dtype=torch.bool, device=device).tril(n_key - n_query)


def attention_matrix(q: Tensor, k: Tensor, bias: Tensor | None, causal: bool, softmax: bool) -> Tensor:
    """The attention matrix ``A`` of the module docstring, written out: ``(..., H, L_q, L_k)`` from queries and
    keys ``(..., H, L, d_head)`` and a bias broadcastable to it.

    Softmax on: ``softmax(Q K^T / sqrt(d) + B + M)``. Softmax off: ``(Q K^T / sqrt(d) + B)`` with masked
    entries set to 0 and each row divided by its number of attended keys.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    n_query, n_key = scores.shape[-2:]
    allowed = causal_mask(n_query, n_key, q.device) if causal else None
    if softmax:
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        return scores.softmax(dim=-1)
    if allowed is None:
        return scores / n_key
    return scores.masked_fill(~allowed, 0.0) / allowed.sum(dim=-1, keepdim=True)


def make_sdpa_mask(bias: Tensor, causal: bool, batch: int) -> Tensor:
    """The bias ``(R or 1, H, L, L)`` as SDPA's float mask for the replica axis folded into a batch of ``batch``:
    ``(1, H, L, L)`` for a bias the replicas share, ``(R * batch, H, L, L)`` for one per replica; with ``-inf``
    above the diagonal if causal.

    A 4-D mask lets PyTorch pick its fused CPU kernel; a 3-D one falls back to the unfused math path (about
    twice slower at L = 128, torch 2.13).
    """
    if causal:
        bias = bias.masked_fill(~causal_mask(*bias.shape[-2:], bias.device), float("-inf"))
    if len(bias) == 1:
        return bias
    return bias.unsqueeze(1).expand(-1, batch, -1, -1, -1).flatten(0, 1)


class SelfAttention(nn.Module):
    """Multi-head self-attention ``Attn(X)`` of the module docstring.

    With softmax on and no internals requested it calls ``F.scaled_dot_product_attention``: a bias ``B``
    is passed as its float ``attn_mask`` (with ``-inf`` above the diagonal when causal), otherwise
    ``is_causal`` selects the causal kernel. Set ``use_sdpa = False`` to compute ``A`` by hand on every
    call (what the attention benchmark uses as the floor for bias families).
    """

    def __init__(
        self, d_model: int, n_heads: int, softmax: bool = True, causal: bool = False, position_only: bool = False
    ) -> None:
        super().__init__()
        self.n_heads, self.softmax, self.causal, self.position_only = n_heads, softmax, causal, position_only
        self.use_sdpa = True
        self.layer = 0  # this layer's index in the stack (contextual encodings keep parameters per layer)
        self.qkv = Linear(d_model, 3 * d_model)
        self.out = Linear(d_model, d_model)

    def forward(
        self,
        x: Tensor,
        encoding: PositionalEncoding,
        bias: Tensor | None,
        return_attention: bool = False,
        sdpa_mask: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``x``: ``(R, B, L, d_model)`` -> ``(Attn(x), A or None)``; ``A`` only when ``return_attention``.

        ``bias``: ``(R or 1, H, L, L)``. ``sdpa_mask``: :func:`make_sdpa_mask` of ``bias``, when the caller has
        built it once for every layer. ``positions``: the encoding's positions of this pass, for rotary ones.
        A contextual encoding's bias ``(R, B, H, L, L)`` is computed here, from this layer's queries and keys.
        """
        replicas, batch, length, d_model = x.shape
        heads_of = lambda t: t.view(replicas, batch, length, 3, self.n_heads, -1).permute(3, 0, 1, 4, 2, 5)  # noqa: E731
        q, k, v = heads_of(self.qkv(x))  # each (R, B, H, L, d_head)
        if self.position_only:
            positions = sinusoid_table(length, d_model).to(x).expand(replicas, batch, length, d_model)
            q, k, _ = heads_of(self.qkv(positions))
        if encoding.acts_on == "rotary":  # an encoding written before explicit positions still serves 0..L-1
            q, k = encoding.rotate(q, k) if positions is None else encoding.rotate(q, k, positions)
        per_example = None  # a contextual encoding's bias, (R, B, H, L, L)
        if encoding.acts_on == "contextual":
            per_example = encoding.contextual_bias(q, k, self.layer, self.causal)
        weights = None
        if self.softmax and self.use_sdpa and not return_attention:
            if per_example is not None:
                sdpa_mask = make_sdpa_mask(per_example.flatten(0, 1), self.causal, 1)
            elif bias is not None and sdpa_mask is None:
                sdpa_mask = make_sdpa_mask(bias, self.causal, batch)
            q, k, v = q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1)  # the replica axis folded into the batch
            heads = F.scaled_dot_product_attention(
                q, k, v, attn_mask=sdpa_mask, is_causal=self.causal and sdpa_mask is None
            ).view(replicas, batch, self.n_heads, length, -1)
        else:
            full = per_example if per_example is not None else None if bias is None else bias.unsqueeze(1)
            weights = attention_matrix(q, k, full, self.causal, self.softmax)
            heads = weights @ v
        return self.out(heads.transpose(2, 3).reshape(replicas, batch, length, d_model)), weights


class Block(nn.Module):
    """One layer: attention then (optionally) an MLP, each wrapped by the ``norm`` and ``residual`` rule."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        softmax: bool,
        residual: bool,
        norm: str,
        mlp: bool,
        causal: bool,
        mlp_ratio: int,
        position_only: bool = False,
    ) -> None:
        super().__init__()
        self.residual, self.norm = residual, norm
        self.attention = SelfAttention(d_model, n_heads, softmax=softmax, causal=causal, position_only=position_only)
        self.mlp = (
            nn.Sequential(Linear(d_model, mlp_ratio * d_model), nn.GELU(), Linear(mlp_ratio * d_model, d_model))
            if mlp
            else None
        )
        n_sublayers = 2 if mlp else 1
        self.norms = nn.ModuleList(LayerNorm(d_model) for _ in range(n_sublayers if norm != "none" else 0))

    def _wrap(self, index: int, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        """``x + F(N(x))`` (pre), ``N(x + F(x))`` (post) or ``x + F(x)`` (none); without ``x +`` if no residual."""
        skip = x if self.residual else 0
        if self.norm == "pre":
            return skip + sublayer(self.norms[index](x))
        if self.norm == "post":
            return self.norms[index](skip + sublayer(x))
        return skip + sublayer(x)

    def forward(
        self,
        x: Tensor,
        encoding: PositionalEncoding,
        bias: Tensor | None,
        return_attention: bool = False,
        sdpa_mask: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        weights = None

        def attend(h: Tensor) -> Tensor:
            nonlocal weights
            out, weights = self.attention(h, encoding, bias, return_attention, sdpa_mask, positions)
            return out

        x = self._wrap(0, x, attend)
        if self.mlp is not None:
            x = self._wrap(1, x, self.mlp)
        return x, weights


class AttentionStack(nn.Module):
    """Embedding, encoding, ``depth`` attention layers and a task read-out (see the module docstring)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        depth: int,
        encoding: PositionalEncoding,
        vocab_size: int | None = None,
        softmax: bool = True,
        residual: bool = True,
        norm: str = "pre",
        mlp: bool = True,
        causal: bool = False,
        mlp_ratio: int = 4,
        position_only: bool = False,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"model.n_heads={n_heads} must divide model.d_model={d_model}")
        if norm not in NORMS:
            raise ValueError(f"model.norm={norm} is not one of {', '.join(NORMS)}")
        self.d_model, self.n_heads, self.depth = d_model, n_heads, depth
        self.vocab_size, self.causal, self.norm = vocab_size, causal, norm
        self.encoding = encoding
        self.embed = Linear(1, d_model) if vocab_size is None else Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, softmax, residual, norm, mlp, causal, mlp_ratio, position_only)
            for _ in range(depth)
        )
        for index, block in enumerate(self.blocks):
            block.attention.layer = index
        self.final_norm = LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.readout = Linear(d_model, 1 if vocab_size is None else vocab_size)

    def embed_input(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """Scalars or token ids ``(R or 1, B, L)`` -> ``(R, B, L, d_model)``, with an input encoding added at
        ``positions`` (``(R or 1, L)``, or ``None`` for ``0..L-1``)."""
        h = self.embed(x.unsqueeze(-1)) if self.vocab_size is None else self.embed(x)
        if self.encoding.acts_on != "input":
            return h
        return self.encoding(h) if positions is None else self.encoding(h, positions)

    def layers(
        self, h: Tensor, return_internals: bool = False, positions: Tensor | None = None
    ) -> tuple[Tensor, Internals | None]:
        """The ``depth`` blocks over an embedded input ``h`` ``(R, B, L, d_model)``, without final norm or read-out,
        at ``positions`` (``(R or 1, L)``, or ``None`` for ``0..L-1``).

        A bias encoding's bias (and its SDPA mask) is computed once and shared by every layer.
        """
        batch, length = h.shape[1:3]
        bias = None
        if self.encoding.acts_on == "bias" and positions is None:  # (the hook of an encoding written before
            bias = self.encoding.attention_bias(length, length)  # explicit positions still serves 0..L-1)
        elif self.encoding.acts_on == "bias":
            bias = self.encoding.attention_bias(length, length, positions, positions)
        sdpa_mask = make_sdpa_mask(bias, self.causal, batch) if bias is not None else None
        internals = Internals(inputs=h, layers=[], attention=[]) if return_internals else None
        for block in self.blocks:
            h, weights = block(h, self.encoding, bias, return_internals, sdpa_mask, positions)
            if internals is not None:
                internals.layers.append(h)
                internals.attention.append(weights)
        return h, internals

    def forward(self, x: Tensor, return_internals: bool = False) -> Tensor | tuple[Tensor, Internals]:
        """``x`` ``(R or 1, B, L)`` -> ``(R, B)`` (regression) or ``(R, B, L, vocab_size)`` (tokens).

        The encoding's positions of this pass are asked once (``encoding.positions``) and handed to every hook.
        With ``return_internals=True`` also an :class:`Internals`; attention matrices are then computed
        explicitly (the hand-written path), which is slower and meant for diagnostics only.
        """
        positions = self.encoding.positions(x.shape[2], x.device)
        h, internals = self.layers(self.embed_input(x, positions), return_internals, positions)
        h = self.final_norm(h)
        out = self.readout(h[:, :, -1]).squeeze(-1) if self.vocab_size is None else self.readout(h)
        return (out, internals) if internals is not None else out
