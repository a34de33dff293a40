"""Schemas of the callbacks in ``conf/callbacks``, one per callback (the group's container stays open, so a
``callbacks`` option may add callbacks of its own)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class BestCheckpoint:
    """``posenc_exp.callbacks.ResumableCheckpoint`` (Lightning's ``ModelCheckpoint``) keeping the best epochs."""

    _target_: str = MISSING
    dirpath: str = MISSING
    filename: str = MISSING
    auto_insert_metric_name: bool = MISSING
    monitor: str = MISSING
    mode: str = MISSING
    save_top_k: int = MISSING

    @classmethod
    def check_config(cls, config: Any, key: str = "callbacks.model_checkpoint") -> None:
        from posenc_exp.checks import require_choice, require_int

        require_choice(f"{key}.mode", config.mode, ("min", "max"))
        require_int(f"{key}.save_top_k", config.save_top_k, -1, allowed="an integer >= -1 (-1: every epoch)")


@dataclass
class LastCheckpoint:
    """The same callback, unmonitored: ``last.ckpt`` every ``every_n_epochs`` epochs and at the last epoch."""

    _target_: str = MISSING
    dirpath: str = MISSING
    filename: str = MISSING
    enable_version_counter: bool = MISSING
    every_n_epochs: int = MISSING

    @classmethod
    def check_config(cls, config: Any, key: str = "callbacks.last_checkpoint") -> None:
        from posenc_exp.checks import require_int

        require_int(f"{key}.every_n_epochs", config.every_n_epochs, 1)


@dataclass
class EncodingSnapshot:
    _target_: str = MISSING
    history_pixels: list[int] = field(default_factory=lambda: MISSING)  # type: ignore[arg-type]
    image_every_n_epochs: int = MISSING


@dataclass
class PositionPerplexity:
    _target_: str = MISSING


@dataclass
class AttentionPatterns:
    _target_: str = MISSING
    n_examples: int = MISSING
    head_pixels: int = MISSING


@dataclass
class ProgressBar:
    """Lightning's ``TQDMProgressBar``."""

    _target_: str = MISSING
    refresh_rate: int = MISSING

    @classmethod
    def check_config(cls, config: Any, key: str = "callbacks.progress_bar") -> None:
        from posenc_exp.checks import require_int

        require_int(f"{key}.refresh_rate", config.refresh_rate, 0, allowed="an integer >= 0 (0: no bar)")


@dataclass
class Diagnostics:
    _target_: str = MISSING
    n_examples: int = MISSING


SCHEMAS = {
    "model_checkpoint": BestCheckpoint,
    "last_checkpoint": LastCheckpoint,
    "encoding_snapshot": EncodingSnapshot,
    "progress_bar": ProgressBar,
    "attention_patterns": AttentionPatterns,
    "position_perplexity": PositionPerplexity,
    "diagnostics": Diagnostics,
}
