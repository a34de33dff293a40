"""Schemas of ``conf/model``: the networks (``posenc_exp.models``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from omegaconf import MISSING

from posenc_exp.checks import require_choice, require_int, require_parameters
from posenc_exp.errors import ConfigError

NORMS = ("pre", "post", "none")  # model.norm: before each sublayer, after each residual sum, or none


@dataclass
class FeedForward:
    """``posenc_exp.models.FeedForward``: reads exactly ``length`` scalars, through an input-added encoding
    only, and serves regression tasks only (``fixed_window``: the relations that ``posenc_exp.config`` checks)."""

    fixed_window: ClassVar[bool] = True

    _target_: str = MISSING
    length: int = MISSING
    n_hidden: int = MISSING
    encoding: Any = MISSING

    @classmethod
    def check_config(cls, model: Any) -> None:
        """``length`` and ``n_hidden`` >= 1, and the ``L * H + 2 H + 1`` weights in memory."""
        require_int("model.length", model.length, 1)
        require_int("model.n_hidden", model.n_hidden, 1)
        keys = f"model.n_hidden={model.n_hidden} model.length={model.length}"
        require_parameters(keys, (model.length + 2) * model.n_hidden + 1)


@dataclass
class Attention:
    """``posenc_exp.models.AttentionStack``."""

    fixed_window: ClassVar[bool] = False

    _target_: str = MISSING
    d_model: int = MISSING
    n_heads: int = MISSING
    depth: int = MISSING
    softmax: bool = MISSING
    residual: bool = MISSING
    norm: str = MISSING
    mlp: bool = MISSING
    mlp_ratio: int = MISSING
    causal: bool = MISSING
    position_only: bool = MISSING
    vocab_size: Optional[int] = MISSING  # noqa: UP045 - OmegaConf 2.3 reads typing.Optional, not X | None
    encoding: Any = MISSING

    @classmethod
    def check_config(cls, model: Any) -> None:
        """Sizes >= 1, ``n_heads`` dividing ``d_model``, a known ``norm``, and the weights in memory:
        per layer ``4 d^2 + 4 d`` (attention) + ``2 r d^2 + (r + 1) d`` (MLP of ratio ``r``) + ``4 d`` (norms),
        plus the embedding and read-out (``2 V d + V`` for ``V`` tokens, ``3 d + 1`` for scalars)."""
        for key in ("d_model", "n_heads", "depth", "mlp_ratio"):
            require_int(f"model.{key}", model[key], 1)
        require_choice("model.norm", model.norm, NORMS)
        d, heads, vocab = model.d_model, model.n_heads, model.vocab_size
        if d % heads:
            raise ConfigError(f"model.n_heads={heads} does not divide model.d_model={d}")
        if vocab is not None:
            require_int("model.vocab_size", vocab, 1, allowed="an integer >= 1, or null for scalar inputs")
        r = model.mlp_ratio if model.mlp else 0
        layer = 4 * d * d + 4 * d + 2 * r * d * d + (r + 1) * d * (r > 0) + 4 * d
        ends = 2 * vocab * d + vocab if vocab is not None else 3 * d + 1
        keys = f"model.d_model={d} model.depth={model.depth} model.mlp_ratio={model.mlp_ratio} model.vocab_size={vocab}"
        require_parameters(keys, model.depth * layer + ends)


SCHEMAS = {"feedforward": FeedForward, "attention": Attention}
