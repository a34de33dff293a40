"""TensorBoard's HParams tab: which config values a run shows there, and the session that declares its metrics."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from posenc_exp.rundir import flatten


def hparams_of(cfg: DictConfig) -> dict[str, Any]:
    """The swept-on parts of the config, resolved: what TensorBoard's HParams tab shows per run."""
    groups = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("data", "model", "optimizer")}
    return {**groups, "seed": cfg.seed, "max_epochs": cfg.trainer.max_epochs}


def log_hparams(writer: Any, params: dict[str, Any], metric_names: list[str]) -> None:
    """Write TensorBoard's HParams session for this run, declaring ``metric_names`` as its metrics.

    The tab reads each metric's value from the run's scalar series of the same tag, so the real losses
    logged during training show up there; no placeholder value is written.
    """
    from torch.utils.tensorboard.summary import hparams

    flat = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in flatten(params).items()}
    for summary in hparams(flat, dict.fromkeys(metric_names, math.nan)):
        writer.file_writer.add_summary(summary)
