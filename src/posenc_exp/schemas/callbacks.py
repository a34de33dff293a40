"""Schemas of the callbacks in ``conf/callbacks``, one per callback (the group's container stays open, so a
``callbacks`` option may add callbacks of its own)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from posenc_exp.checks import is_int, require_choice, require_int
from posenc_exp.errors import ConfigError


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
        """``every_n_epochs`` >= 1."""
        require_int(f"{key}.every_n_epochs", config.every_n_epochs, 1)


@dataclass
class EncodingSnapshot:
    """``posenc_exp.callbacks.EncodingSnapshot``."""

    _target_: str = MISSING
    history_pixels: list[int] = field(default_factory=lambda: MISSING)  # type: ignore[arg-type]
    image_every_n_epochs: int = MISSING

    @classmethod
    def check_config(cls, config: Any, key: str = "callbacks.encoding_snapshot") -> None:
        """``history_pixels``: ``[height, width]``, two integers >= 16; ``image_every_n_epochs`` >= 1."""
        pixels = list(config.get("history_pixels", [16, 16]))
        if len(pixels) != 2 or not all(is_int(p) and p >= 16 for p in pixels):
            raise ConfigError(
                f"{key}.history_pixels={pixels} is not allowed: expected [height, width], two integers >= 16"
            )
        require_int(f"{key}.image_every_n_epochs", config.get("image_every_n_epochs", 1), 1)


@dataclass
class PositionPerplexity:
    _target_: str = MISSING

    @classmethod
    def check_config(cls, config: Any, key: str = "callbacks.position_perplexity") -> None:
        """Nothing beyond the types: no keys."""


@dataclass
class AttentionPatterns:
    """``posenc_exp.callbacks.AttentionPatterns``."""

    _target_: str = MISSING
    n_examples: int = MISSING
    head_pixels: int = MISSING

    @classmethod
    def check_config(cls, config: Any, key: str = "callbacks.attention_patterns") -> None:
        """``n_examples`` >= 1, ``head_pixels`` >= 16."""
        require_int(f"{key}.n_examples", config.n_examples, 1)
        require_int(f"{key}.head_pixels", config.head_pixels, 16)


@dataclass
class ProgressBar:
    """``posenc_exp.callbacks.ProgressBar`` (Lightning's ``TQDMProgressBar``)."""

    _target_: str = MISSING
    refresh_rate: int = MISSING

    @classmethod
    def check_config(cls, config: Any, key: str = "callbacks.progress_bar") -> None:
        require_int(f"{key}.refresh_rate", config.refresh_rate, 0, allowed="an integer >= 0 (0: no bar)")


@dataclass
class Diagnostics:
    """``posenc_exp.diagnostics.Diagnostics``."""

    _target_: str = MISSING
    n_examples: int = MISSING

    @classmethod
    def check_config(cls, config: Any, key: str = "callbacks.diagnostics") -> None:
        """``n_examples`` >= 1."""
        require_int(f"{key}.n_examples", config.n_examples, 1)


SCHEMAS = {
    "model_checkpoint": BestCheckpoint,
    "last_checkpoint": LastCheckpoint,
    "encoding_snapshot": EncodingSnapshot,
    "progress_bar": ProgressBar,
    "attention_patterns": AttentionPatterns,
    "position_perplexity": PositionPerplexity,
    "diagnostics": Diagnostics,
}
