"""Schemas of ``conf/encoding``: the positional encodings (``posenc_exp.encodings``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING


@dataclass
class NoPE:
    _target_: str = MISSING


@dataclass
class Learned:
    _target_: str = MISSING
    max_positions: int = MISSING
    d_model: int = MISSING
    init_std: float = MISSING


@dataclass
class Sinusoidal:
    _target_: str = MISSING
    d_model: int = MISSING
    max_positions: int = MISSING
    learnable: bool = MISSING
    base: float = MISSING


@dataclass
class RoPE:
    _target_: str = MISSING
    d_model: int = MISSING
    n_heads: int = MISSING
    max_positions: int = MISSING
    base: float = MISSING
    scaling: str = MISSING
    scaling_factor: float = MISSING
    scaling_lengths: str = MISSING


@dataclass
class ALiBi:
    _target_: str = MISSING
    n_heads: int = MISSING
    causal: bool = MISSING
    max_positions: int = MISSING


@dataclass
class T5:
    _target_: str = MISSING
    n_heads: int = MISSING
    causal: bool = MISSING
    num_buckets: int = MISSING
    max_distance: int = MISSING
    init_std: float = MISSING
    max_positions: int = MISSING


@dataclass
class XPos:
    _target_: str = MISSING
    d_model: int = MISSING
    n_heads: int = MISSING
    max_positions: int = MISSING
    base: float = MISSING
    scale_base: float = MISSING
    gamma: float = MISSING


@dataclass
class KERPLE:
    _target_: str = MISSING
    n_heads: int = MISSING
    causal: bool = MISSING
    eps: float = MISSING
    max_positions: int = MISSING


@dataclass
class FIRE:
    _target_: str = MISSING
    n_heads: int = MISSING
    causal: bool = MISSING
    mlp_width: int = MISSING
    init_c: float = MISSING
    init_threshold: float = MISSING
    eps: float = MISSING
    max_positions: int = MISSING


@dataclass
class CoPE:
    _target_: str = MISSING
    d_model: int = MISSING
    n_heads: int = MISSING
    depth: int = MISSING
    causal: bool = MISSING
    num_embeddings: int = MISSING


@dataclass
class Randomized:
    """The wrapped option's node (``base``) is typed by that option's own schema (composed from its YAML)."""

    _target_: str = MISSING
    base: Any = MISSING
    max_positions: int = MISSING
    position_range: Optional[int] = MISSING  # noqa: UP045 - OmegaConf 2.3 reads typing.Optional, not X | None
    eval_positions: str = MISSING


SCHEMAS = {
    "none": NoPE,
    "learned": Learned,
    "sinusoidal": Sinusoidal,
    "rope": RoPE,
    "alibi": ALiBi,
    "t5": T5,
    "xpos": XPos,
    "kerple": KERPLE,
    "fire": FIRE,
    "cope": CoPE,
    "randomized": Randomized,
}
