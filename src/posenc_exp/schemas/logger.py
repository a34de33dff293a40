"""Schemas of ``conf/logger`` (Lightning's ``TensorBoardLogger``)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class TensorBoard:
    _target_: str = MISSING
    save_dir: str = MISSING
    name: str = MISSING
    version: str = MISSING
    default_hp_metric: bool = MISSING


SCHEMAS = {"tensorboard": TensorBoard}
