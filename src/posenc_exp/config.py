"""Checks that turn bad input into one clear error line before anything is trained or written."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from posenc_exp import CONFIG_DIR


class ConfigError(ValueError):
    """A config value or combination that cannot work. The message names the key and what is allowed."""


# key -> (predicate, what is allowed). Keys absent from a config are skipped.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data.context_size": (lambda v: v >= 1, "an integer >= 1"),
    "model.n_hidden": (lambda v: v >= 1, "an integer >= 1"),
    "data.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "data.chunk_steps": (lambda v: v >= 1, "an integer >= 1"),
    "data.val_fraction": (lambda v: 0 < v < 1, "a fraction strictly between 0 and 1"),
    "optimizer.lr": (lambda v: v > 0 and math.isfinite(v), "a finite number > 0"),
    "trainer.max_epochs": (lambda v: v >= 1, "an integer >= 1"),
}


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value outside its allowed range."""
    for key, (allowed, description) in RULES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not allowed(value):
            raise ConfigError(f"{key}={value} is not allowed: expected {description}")
    xlen, context = OmegaConf.select(cfg, "data.xlen"), OmegaConf.select(cfg, "data.context_size")
    if xlen is not None and xlen <= context:
        raise ConfigError(f"data.xlen={xlen} is not allowed: expected an integer > data.context_size={context}")
    if cfg.get("ckpt_path"):
        check_checkpoint(cfg.ckpt_path)


def check_checkpoint(path: str) -> None:
    """A Lightning checkpoint that exists and loads with ``weights_only=True``."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"ckpt_path={path} does not exist: expected a checkpoint file such as last.ckpt")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConfigError(f"ckpt_path={path} is not a checkpoint: {type(error).__name__}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "epoch" not in checkpoint:
        raise ConfigError(f"ckpt_path={path} is not a Lightning checkpoint (no state_dict/epoch)")


_GROUP_CHOICE = re.compile(r"^[+~]?([\w/]+)=([\w,./-]+)$")


def check_group_choices(overrides: Sequence[str], config_dir: Path = CONFIG_DIR) -> None:
    """Reject ``group=option`` overrides naming an option that has no ``conf/group/option.yaml``.

    Hydra would fail too, but with a screenful; this says it in one line. Only plain and comma-separated
    choices of groups under ``conf/`` are checked; Hydra's own groups and sweep functions are left to it.
    """
    for override in overrides:
        match = _GROUP_CHOICE.match(override)
        if not match or match[1].startswith("hydra") or not (config_dir / match[1]).is_dir():
            continue
        group, options = match[1], match[2]
        allowed = sorted(p.stem for p in (config_dir / group).glob("*.yaml"))
        for option in options.split(","):
            if option != "null" and option not in allowed:
                raise ConfigError(f"{group}={option} is not an option of '{group}': allowed {', '.join(allowed)}")
