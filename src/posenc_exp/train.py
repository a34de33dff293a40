"""Train one experiment: ``python -m posenc_exp.train [overrides]``; ``-m`` sweeps.

A thin ``main`` under ``@hydra.main`` around :func:`train`, which builds everything from the composed config
with ``hydra.utils.instantiate``, fits, writes ``metrics.json`` and returns the metrics.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from posenc_exp import CONFIG_DIR
from posenc_exp.callbacks import tensorboard_writer
from posenc_exp.config import check_group_choices, check_overrides, check_renamed, validate
from posenc_exp.console import print_run_location, print_summary, quiet_third_party
from posenc_exp.data import SyntheticDataModule
from posenc_exp.errors import USER_ERRORS, ConfigError
from posenc_exp.hparams import hparams_of, log_hparams, log_scalar_layout
from posenc_exp.module import PosEncModule
from posenc_exp.perplexity import POSITION_LOSS
from posenc_exp.rundir import FAILURE_FILE, METRICS_FILE, flatten, write_json
from posenc_exp.sweep import (
    check_distributed_sweep,
    check_sweeper_plugins,
    finished_metrics,
    is_multirun,
    job_overrides,
    record_failure,
    thread_budget,
)


def encoding_as_list(encoding: Tensor | None) -> list | None:
    """A snapshot as nested lists; a width-1 table (the seed's vector) as a flat list."""
    if encoding is None:
        return None
    return (encoding.squeeze(-1) if encoding.shape[-1] == 1 else encoding).tolist()


def per_length_metrics(logged: dict[str, float], module: PosEncModule) -> dict[str, dict[str, float]]:
    """``{"<length>": {"<metric>": value}}`` from the logged ``val/<metric>@len=<length>`` values."""
    return {
        str(n): {name: logged.get(f"val/{name}@len={n}", math.nan) for name in module.metric_names()}
        for n in module.eval_lengths
    }


def build_module(cfg: DictConfig, datamodule: SyntheticDataModule) -> PosEncModule:
    """The LightningModule for this config and task, from primitive values only (checkpoint-safe)."""
    return PosEncModule(
        net=OmegaConf.to_container(cfg.model, resolve=True),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        task=datamodule.task,
        train_length=datamodule.train_length,
        eval_lengths=datamodule.eval_lengths,
        loss_floor=getattr(datamodule, "loss_floor", None),
    )


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, PosEncModule, L.Trainer]:
    """Seed, then instantiate the datamodule (set up), the module and the trainer from a composed config."""
    L.seed_everything(cfg.seed, verbose=False)
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a progress bar it may not show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    return datamodule, module, trainer


def train(cfg: DictConfig) -> dict[str, Any]:
    """Validate, build, fit; write ``metrics.json`` into the run directory and return the metrics."""
    validate(cfg)
    check_distributed_sweep(cfg)
    threads = thread_budget(cfg)
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    datamodule, module, trainer = build(cfg)
    if (writer := tensorboard_writer(trainer)) is not None and trainer.is_global_zero:
        log_hparams(writer, {**hparams_of(cfg), **flatten(datamodule.provenance())})  # + a text corpus's fingerprint
        log_scalar_layout(writer, module)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    logged = {k: v.item() for k, v in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback
    metrics: dict[str, Any] = {
        "train_loss": logged.get("train/loss", math.nan),
        "val_loss": logged.get("val/loss", math.nan),
        "best_val_loss": checkpoint.best_model_score.item() if checkpoint and checkpoint.best_model_score else None,
        "val_loss_floor": module.loss_floor,
        "val_loss_gap": logged.get("val/loss_gap"),
        "train_length": module.train_length,
        "eval": per_length_metrics(logged, module),
        "epochs": trainer.current_epoch,
        "optimizer_steps": trainer.global_step,
        "wall_time_s": round(time.perf_counter() - started, 3),
        "threads": torch.get_num_threads(),
        "overrides": job_overrides(),
        "encoding_initial": encoding_as_list(module.encoding_initial),
        "encoding_final": encoding_as_list(module.net.encoding.snapshot()),
        **datamodule.provenance(),  # e.g. the text corpus's fingerprint
    }
    if module.position_loss is not None:  # language modelling: the per-position curve (posenc_exp.perplexity)
        metrics[POSITION_LOSS] = {"length": module.eval_lengths[-1], "loss": module.position_loss.tolist()}
    if trainer.is_global_zero:
        write_json(Path(cfg.paths.output_dir) / METRICS_FILE, metrics, indent=2)
        print_summary(metrics)
        print_run_location(Path(cfg.paths.output_dir))
    return metrics


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float:
    """Hydra's entry point; returns the objective (validation loss) for sweepers such as Optuna.

    In a sweep (``-m``): a job whose directory has ``metrics.json`` is skipped (its stored loss returned)
    unless ``force=true``, so rerunning a sweep command resumes it; a failed job writes ``error.txt``.
    """
    quiet_third_party()  # again here: a sweep job may run in a fresh process (joblib, submitit)
    multirun = is_multirun()
    try:
        if multirun:
            (Path(cfg.paths.output_dir) / FAILURE_FILE).unlink(missing_ok=True)
            if (finished := finished_metrics(cfg)) is not None:
                print(f"skip: {cfg.paths.output_dir} already has {METRICS_FILE} (force=true reruns it)")
                return finished["val_loss"]
        return train(cfg)["val_loss"]
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        if multirun:
            record_failure(cfg, error)
            return math.nan  # one failed job must not take the rest of the sweep down with it
        sys.exit(1)
    except Exception as error:
        if multirun:
            record_failure(cfg, error)
        raise


def main() -> None:
    quiet_third_party()
    try:
        check_renamed(sys.argv[1:])
        check_group_choices(sys.argv[1:])
        check_sweeper_plugins(sys.argv[1:])
        check_overrides(sys.argv[1:])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
