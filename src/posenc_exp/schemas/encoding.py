"""Schemas of ``conf/encoding``: the positional encodings (``posenc_exp.encodings``)."""

from __future__ import annotations

from dataclasses import dataclass

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


SCHEMAS = {"none": NoPE, "learned": Learned, "sinusoidal": Sinusoidal, "rope": RoPE, "alibi": ALiBi, "t5": T5}
