"""Schemas of ``conf/model``: the networks (``posenc_exp.models``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING


@dataclass
class FeedForward:
    _target_: str = MISSING
    length: int = MISSING
    n_hidden: int = MISSING
    encoding: Any = MISSING


@dataclass
class Attention:
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


SCHEMAS = {"feedforward": FeedForward, "attention": Attention}
