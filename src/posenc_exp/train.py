"""Train one experiment: ``python -m posenc_exp.train [overrides]``; ``-m`` sweeps.

A thin ``main`` under ``@hydra.main`` around :func:`train`, which builds everything from the composed config
with ``hydra.utils.instantiate``, fits, writes ``metrics.json`` and returns the metrics.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from posenc_exp import CONFIG_DIR
from posenc_exp.callbacks import tensorboard_writer
from posenc_exp.config import ConfigError, check_group_choices, validate
from posenc_exp.encodings import LengthError
from posenc_exp.module import NonFiniteLossError, PosEncModule

# Errors that are the user's input, reported as one line rather than a traceback.
USER_ERRORS = (ConfigError, NonFiniteLossError, LengthError)
OBJECTIVE = "val/loss"


def thread_budget(cfg: DictConfig) -> int | None:
    """Torch threads for this job: ``cfg.threads`` if set; under the joblib launcher, the cores divided
    among the parallel jobs (at least 1); otherwise ``None`` (torch's default)."""
    if cfg.get("threads"):
        return int(cfg.threads)
    if HydraConfig.initialized():
        launcher = HydraConfig.get().launcher
        if "joblib" in str(launcher.get("_target_", "")):
            cores = os.cpu_count() or 1
            n_jobs = launcher.get("n_jobs") or cores
            return max(1, cores // (cores if n_jobs < 0 else n_jobs))
    return None


def hparams_of(cfg: DictConfig) -> dict[str, Any]:
    """The swept-on parts of the config, resolved: what TensorBoard's HParams tab shows per run."""
    groups = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("data", "model", "optimizer")}
    return {**groups, "seed": cfg.seed, "max_epochs": cfg.trainer.max_epochs}


def log_hparams(writer: Any, params: dict[str, Any], metric_names: list[str]) -> None:
    """Write TensorBoard's HParams session for this run, declaring ``metric_names`` as its metrics.

    The tab reads each metric's value from the run's scalar series of the same tag, so the real losses
    logged during training show up there; no placeholder value is written.
    """
    from lightning.fabric.utilities.logger import _flatten_dict, _sanitize_params
    from torch.utils.tensorboard.summary import hparams

    flat = _sanitize_params(_flatten_dict(params))
    flat = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in flat.items()}
    for summary in hparams(flat, dict.fromkeys(metric_names, math.nan)):
        writer.file_writer.add_summary(summary)


def encoding_as_list(encoding: Tensor | None) -> list | None:
    """A snapshot as nested lists; a width-1 table (the seed's vector) as a flat list."""
    if encoding is None:
        return None
    return (encoding.squeeze(-1) if encoding.shape[-1] == 1 else encoding).tolist()


def print_summary(metrics: dict[str, Any]) -> None:
    """The seed printed the encodings before and after training; this prints them as a table."""
    initial, final = metrics["encoding_initial"], metrics["encoding_final"]
    if initial is not None:
        wide = isinstance(initial[0], list)
        label = "row norm" if wide else "value"
        norm = lambda row: math.sqrt(sum(v * v for v in row)) if wide else row  # noqa: E731
        print(f"\n{'position':>8} | {'initial ' + label:>16} | {'final ' + label:>16} | {'change':>9}")
        print(f"{'-' * 8}-+-{'-' * 16}-+-{'-' * 16}-+-{'-' * 9}")
        for i, (a, b) in enumerate(zip(initial, final, strict=True)):
            print(f"{i:>8} | {norm(a):>16.4f} | {norm(b):>16.4f} | {norm(b) - norm(a):>+9.4f}")
    floor = metrics.get("val_loss_floor")
    print(
        f"\nepochs={metrics['epochs']}  train_loss={metrics['train_loss']:.4f}  "
        f"val_loss={metrics['val_loss']:.4f}" + (f"  (best achievable {floor:.4f})" if floor else "")
    )


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically, so a crash never leaves a half-written file that could pass for results."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(payload, indent=2))
    partial.replace(path)


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, PosEncModule, L.Trainer]:
    """Seed, then instantiate the datamodule (set up), the module and the trainer from a composed config."""
    L.seed_everything(cfg.seed, verbose=False)
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = PosEncModule(
        net=OmegaConf.to_container(cfg.model, resolve=True),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
    )
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    return datamodule, module, trainer


def train(cfg: DictConfig) -> dict[str, Any]:
    """Validate, build, fit; write ``metrics.json`` into the run directory and return the metrics."""
    validate(cfg)
    threads = thread_budget(cfg)
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    datamodule, module, trainer = build(cfg)
    if (writer := tensorboard_writer(trainer)) is not None and trainer.is_global_zero:
        log_hparams(writer, hparams_of(cfg), ["train/loss", "val/loss"])

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    logged = {k: v.item() for k, v in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback
    metrics: dict[str, Any] = {
        "train_loss": logged.get("train/loss", math.nan),
        "val_loss": logged.get("val/loss", math.nan),
        "best_val_loss": checkpoint.best_model_score.item() if checkpoint and checkpoint.best_model_score else None,
        "val_loss_floor": getattr(datamodule, "loss_floor", None),
        "epochs": trainer.current_epoch,
        "optimizer_steps": trainer.global_step,
        "wall_time_s": round(time.perf_counter() - started, 3),
        "encoding_initial": encoding_as_list(module.encoding_initial),
        "encoding_final": encoding_as_list(module.net.encoding.snapshot()),
    }
    if trainer.is_global_zero:
        write_json(Path(cfg.paths.output_dir) / "metrics.json", metrics)
        print_summary(metrics)
    return metrics


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float:
    """Hydra's entry point; returns the objective (validation loss) for sweepers such as Optuna."""
    try:
        return train(cfg)["val_loss"]
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        if HydraConfig.get().mode.name == "MULTIRUN":
            return math.nan  # one failed job must not take the rest of the sweep down with it
        sys.exit(1)


def main() -> None:
    try:
        check_group_choices(sys.argv[1:])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
