"""Train one experiment: ``python -m posenc_exp.train [overrides]``; ``-m`` sweeps.

A thin ``main`` under ``@hydra.main`` around :func:`train`, which builds everything from the composed config
with ``hydra.utils.instantiate``, fits, writes ``metrics.json`` and returns the metrics.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from posenc_exp import CONFIG_DIR
from posenc_exp.callbacks import tensorboard_writer
from posenc_exp.config import check_group_choices, check_output_dir, check_overrides, check_renamed, validate
from posenc_exp.console import print_run_location, print_summary, quiet_third_party
from posenc_exp.data import SyntheticDataModule
from posenc_exp.errors import USER_ERRORS, ConfigError
from posenc_exp.hparams import hparams_of, log_hparams, log_scalar_layout
from posenc_exp.module import PosEncModule
from posenc_exp.perplexity import POSITION_LOSS
from posenc_exp.rundir import FAILURE_FILE, METRICS_FILE, flatten, remove_if_empty, write_json, write_record
from posenc_exp.sweep import (
    ForeignJobError,
    check_distributed_sweep,
    check_job_directory,
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
        data=OmegaConf.to_container(cfg.data, resolve=True),
    )


def check_resumable(path: str, module: PosEncModule) -> None:
    """``ckpt_path`` holds this experiment: the same model, encoding and task (:meth:`PosEncModule.differences`)."""
    hparams = torch.load(path, map_location="cpu", weights_only=True).get("hyper_parameters", {})
    if differences := module.differences(hparams):
        more = f" (and {len(differences) - 2} more)" if len(differences) > 2 else ""
        raise ConfigError(
            f"ckpt_path={path} is another experiment's checkpoint: {'; '.join(differences[:2])}{more}; resume "
            "with the model, encoding and task it was trained with"
        )


@contextmanager
def building(component: str, node: DictConfig | None = None, key: str = "") -> Iterator[None]:
    """Any exception while ``component`` is built becomes one :class:`ConfigError` line naming it, and the key
    of its config ``node`` (at ``key``) that the message is about, where it names exactly one (Lightning's
    ``You selected an invalid strategy name: strategy='x'`` -> ``trainer.strategy=x``). A ``ConfigError``
    raised by the component itself (through Hydra's ``InstantiationException``) is passed on as it is: it
    already names the key and what is allowed."""
    try:
        yield
    except Exception as error:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        root = error
        while root.__cause__ is not None:
            root = root.__cause__
        message = str(root).strip().splitlines()[0] if str(root).strip() else ""
        named = [k for k in (node or {}) if k != "_target_" and re.search(rf"\b{re.escape(str(k))}\b", message)]
        culprit = f"{key}.{named[0]}={node[named[0]]}: " if len(named) == 1 else ""
        raise ConfigError(
            f"{culprit}{component} could not be built: {type(root).__name__}: {message}".rstrip(": ")
        ) from None


def component_name(cfg: DictConfig, group: str) -> str:
    """``group=option (target)``, or ``group (target)`` when the option is not known."""
    choice = HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None
    target = OmegaConf.select(cfg, f"{group}._target_", default="")
    return f"{group}={choice} ({target})" if choice else f"{group} ({target})"


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, PosEncModule, L.Trainer]:
    """Seed, then instantiate the datamodule (set up), the module and the trainer from a composed config.

    Nothing is written yet (the logger makes its event file on first use); an exception while building any
    of them is one :class:`ConfigError` line naming the component (:func:`building`)."""
    L.seed_everything(cfg.seed, verbose=False)
    with building(component_name(cfg, "data"), cfg.data, "data"):
        datamodule: L.LightningDataModule = instantiate(cfg.data)
        datamodule.setup("fit")
    with building(f"{component_name(cfg, 'model')} with {component_name(cfg, 'encoding')}"):
        module = build_module(cfg, datamodule)
    with building(component_name(cfg, "optimizer"), cfg.optimizer, "optimizer"):
        module.configure_optimizers()  # built again by Lightning in fit; here to fail before anything is written
    with building(component_name(cfg, "logger"), cfg.get("logger"), "logger"):
        logger = instantiate(cfg.logger) if cfg.get("logger") else False
    callbacks = []
    for name, callback in cfg.get("callbacks", {}).items():
        if callback is not None:
            with building(f"callbacks.{name} ({callback.get('_target_', '')})", callback, f"callbacks.{name}"):
                callbacks.append(instantiate(callback))
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a progress bar it may not show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    with building(component_name(cfg, "trainer"), cfg.trainer, "trainer"):
        trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    check_monitors(cfg, module)
    return datamodule, module, trainer


def check_monitors(cfg: DictConfig, module: PosEncModule) -> None:
    """A callback that monitors a metric (``callbacks.model_checkpoint.monitor``) names one the module logs;
    Lightning would find out at the end of the first epoch, with a traceback."""
    names = module.metric_names()
    per_length = [f"val/{name}@len={n}" for n in module.eval_lengths for name in names]
    logged = ["train/loss", *(f"val/{name}" for name in names), *per_length]
    for name, callback in (cfg.get("callbacks") or {}).items():
        monitor = callback.get("monitor") if isinstance(callback, DictConfig) else None
        if monitor is not None and monitor not in logged:
            raise ConfigError(
                f"callbacks.{name}.monitor={monitor} is not allowed: expected a metric the run logs, one of "
                f"{', '.join(logged)}"
            )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Validate, build, fit; write ``metrics.json`` into the run directory and return the metrics."""
    validate(cfg)
    check_distributed_sweep(cfg)
    threads = thread_budget(cfg)
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    datamodule, module, trainer = build(cfg)
    if cfg.get("ckpt_path"):
        check_resumable(cfg.ckpt_path, module)
    if not is_multirun():  # a sweep job's record is written before it starts (the report lists failed jobs too)
        write_record(cfg)
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
            check_job_directory(cfg)
            write_record(cfg)
            (Path(cfg.paths.output_dir) / FAILURE_FILE).unlink(missing_ok=True)
            if (finished := finished_metrics(cfg)) is not None:
                print(f"skip: {cfg.paths.output_dir} already has {METRICS_FILE} (force=true reruns it)")
                return finished["val_loss"]
        return train(cfg)["val_loss"]
    except USER_ERRORS as error:
        # An error in training may come while a progress bar holds the line: start a new one.
        print(f"{'' if isinstance(error, ConfigError) else chr(10)}error: {error}", file=sys.stderr)
        if multirun:
            if not isinstance(error, ForeignJobError):  # the directory is another job's: leave it as it is
                record_failure(cfg, error)
            return math.nan  # one failed job must not take the rest of the sweep down with it
        remove_if_empty(Path(cfg.paths.output_dir))
        sys.exit(2 if isinstance(error, ConfigError) else 1)
    except Exception as error:
        if multirun:
            record_failure(cfg, error)
        raise


def main() -> None:
    """Check the command line (renamed keys, group choices, sweeper plugins, every override, the run directory)
    and refuse a bad one in one line, exit code 2, before Hydra makes a directory; then run Hydra's entry point."""
    quiet_third_party()
    args = sys.argv[1:]
    try:
        check_renamed(args)
        check_group_choices(args)
        check_sweeper_plugins(args)
        if (composed := check_overrides(args)) is not None:
            check_output_dir(composed, multirun=any(arg in ("-m", "--multirun") for arg in args))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
