"""Schemas of ``conf/logger`` (Lightning's ``TensorBoardLogger``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING


@dataclass
class TensorBoard:
    _target_: str = MISSING
    save_dir: str = MISSING
    name: str = MISSING
    version: str = MISSING
    default_hp_metric: bool = MISSING

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Nothing beyond the types: Lightning's logger takes any directory, name and version."""


SCHEMAS = {"tensorboard": TensorBoard}
