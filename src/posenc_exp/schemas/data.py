"""Schemas of ``conf/data``: the tasks (``posenc_exp.data``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING


def eval_lengths(length: int, factors: Sequence[float]) -> list[int]:
    """``sorted({L} | {floor(f L + 1/2) for f in factors})``, each at least 1: the lengths a task trained at
    ``L`` (``data.length``) is evaluated at (``data.eval_factors``)."""
    return sorted({length, *(max(1, math.floor(f * length + 0.5)) for f in factors)})


@dataclass
class Task:
    """Every task: batching, its data seed and the longest input the model is fed."""

    _target_: str = MISSING
    batch_size: int = MISSING
    chunk_steps: int = MISSING
    seed: int = MISSING
    max_positions: int = MISSING


@dataclass
class Random(Task):
    length: int = MISSING
    xlen: int = MISSING
    val_fraction: float = MISSING


@dataclass
class Lengths(Task):
    """Tasks trained at ``length`` and evaluated at ``round(f * length)`` for ``f`` in ``eval_factors``."""

    length: int = MISSING
    eval_factors: list[float] = field(default_factory=lambda: MISSING)  # type: ignore[arg-type]
    n_train: int = MISSING
    n_val: int = MISSING


@dataclass
class Lag(Lengths):
    lag: int = MISSING


@dataclass
class AR(Lengths):
    coefficients: list[float] = field(default_factory=lambda: MISSING)  # type: ignore[arg-type]
    sigma: float = MISSING
    burn_in: int = MISSING


@dataclass
class Tokens(Lengths):
    min_length: int = MISSING
    vocab_size: int = MISSING


@dataclass
class Text(Task):
    """Byte-level language modelling on files (``posenc_exp.data.TextBytes``)."""

    corpus: Optional[str] = MISSING  # noqa: UP045 - OmegaConf 2.3 reads typing.Optional, not X | None
    length: int = MISSING
    eval_factors: list[float] = field(default_factory=lambda: MISSING)  # type: ignore[arg-type]
    val_fraction: float = MISSING
    max_bytes: int = MISSING
    val_bytes: int = MISSING
    vocab_size: int = MISSING


SCHEMAS = {
    "random": Random,
    "lag": Lag,
    "ar": AR,
    "tokens": Tokens,
    "text": Text,  # in conf/data/_tokens.yaml, the base of copy, reverse, sort and recall
}
