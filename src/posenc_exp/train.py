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
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from posenc_exp import CONFIG_DIR
from posenc_exp.config import (
    check_group_choices,
    check_output_dir,
    check_overrides,
    check_renamed,
    config_groups,
    validate,
)
from posenc_exp.console import print_run_location, print_summary, quiet_third_party
from posenc_exp.errors import USER_ERRORS, ConfigError
from posenc_exp.hparams import hparams_of, log_hparams, log_scalar_layout
from posenc_exp.rundir import (
    FAILURE_FILE,
    METRICS_FILE,
    REPLICA_DIR,
    flatten,
    remove_if_empty,
    write_json,
    write_record,
)
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

# torch, Lightning and the components are imported where they are used, once the config has passed its checks
# (posenc_exp.config.validate): --help, --cfg and every one-line config error need Hydra and the configs only.
if TYPE_CHECKING:
    import lightning as L
    from torch import Tensor

    from posenc_exp.data import SyntheticDataModule
    from posenc_exp.module import PosEncModule


def encoding_as_list(encoding: Tensor | None, replica: int = 0) -> list | None:
    """Replica ``replica``'s snapshot as nested lists; a width-1 table (the seed's vector) as a flat list."""
    from posenc_exp.encodings import replica_of

    if encoding is None:
        return None
    encoding = replica_of(encoding, replica)
    return (encoding.squeeze(-1) if encoding.shape[-1] == 1 else encoding).tolist()


def per_length_metrics(logged: dict[str, float], module: PosEncModule) -> dict[str, dict[str, float]]:
    """``{"<length>": {"<metric>": value}}`` from the logged ``val/<metric>@len=<length>`` values."""
    return {
        str(n): {name: logged.get(f"val/{name}@len={n}", math.nan) for name in module.metric_names()}
        for n in module.eval_lengths
    }


def build_module(cfg: DictConfig, datamodule: SyntheticDataModule) -> PosEncModule:
    """The LightningModule for this config and task, from primitive values only (checkpoint-safe)."""
    from posenc_exp.module import PosEncModule

    return PosEncModule(
        net=OmegaConf.to_container(cfg.model, resolve=True),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        task=datamodule.task,
        train_length=datamodule.train_length,
        eval_lengths=datamodule.eval_lengths,
        loss_floor=getattr(datamodule, "loss_floor", None),
        data=OmegaConf.to_container(cfg.data, resolve=True),
        replicas=cfg.get("replicas", 1),
        seed=cfg.seed,
        score=getattr(datamodule, "scored", False),
    )


def check_resumable(path: str, module: PosEncModule) -> None:
    """``ckpt_path`` holds this experiment: the same model, encoding and task (:meth:`PosEncModule.differences`)."""
    import torch

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
    import lightning as L
    from lightning.pytorch.callbacks import ProgressBar

    from posenc_exp.loggers import ReplicaLogger
    from posenc_exp.replicas import data_seeds

    L.seed_everything(cfg.seed, verbose=False)
    with building(component_name(cfg, "data"), cfg.data, "data"):
        datamodule: L.LightningDataModule = instantiate(cfg.data)
        if (seeds := data_seeds(cfg)) is not None:
            datamodule.replicate(seeds)
        datamodule.setup("fit")
    with building(f"{component_name(cfg, 'model')} with {component_name(cfg, 'encoding')}"):
        module = build_module(cfg, datamodule)
    with building(component_name(cfg, "optimizer"), cfg.optimizer, "optimizer"):
        module.configure_optimizers()  # built again by Lightning in fit; here to fail before anything is written
    with building(component_name(cfg, "logger"), cfg.get("logger"), "logger"):
        logger = instantiate(cfg.logger) if cfg.get("logger") else False
        if logger and module.replicas > 1:
            logger = [logger, *(ReplicaLogger(cfg.paths.output_dir, k) for k in range(module.replicas))]
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
    """Validate, build, fit; write ``metrics.json`` into the run directory (and each replica's) and return the
    run's metrics."""
    validate(cfg)
    check_distributed_sweep(cfg)
    import torch  # only now, the config having passed its checks

    from posenc_exp.replicas import write_replica_dir

    torch.set_num_threads(thread_budget(cfg))
    started = time.perf_counter()
    datamodule, module, trainer = build(cfg)
    if cfg.get("ckpt_path"):
        check_resumable(cfg.ckpt_path, module)
    if not is_multirun():  # a sweep job's record is written before it starts (the report lists failed jobs too)
        write_record(cfg)
    if trainer.is_global_zero:
        log_run_hparams(cfg, datamodule, module, trainer)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    metrics, replicas = collect_metrics(cfg, datamodule, module, trainer, time.perf_counter() - started)
    if trainer.is_global_zero:
        output_dir = Path(cfg.paths.output_dir)
        if module.replicas > 1:
            for k, replica_metrics in enumerate(replicas):
                write_replica_dir(output_dir, k, replica_metrics)
        write_json(output_dir / METRICS_FILE, metrics, indent=2)
        print_summary(metrics)
        print_run_location(output_dir)
    return metrics


def log_run_hparams(cfg: DictConfig, datamodule: Any, module: PosEncModule, trainer: L.Trainer) -> None:
    """The HParams session and Custom Scalars layout of each replica's run (and, with several replicas, of the
    run's own events, which hold their means), with the data's provenance (e.g. a text corpus's fingerprint)."""
    from posenc_exp.loggers import replica_writers, tensorboard_writer
    from posenc_exp.replicas import replica_config

    provenance = flatten(datamodule.provenance())
    if module.replicas > 1 and (writer := tensorboard_writer(trainer)) is not None:
        log_hparams(writer, {**hparams_of(cfg), **provenance})
        log_scalar_layout(writer, module)
    for replica, writer in replica_writers(trainer):
        log_hparams(writer, {**hparams_of(replica_config(cfg, replica)), **provenance})
        log_scalar_layout(writer, module)


def collect_metrics(
    cfg: DictConfig, datamodule: Any, module: PosEncModule, trainer: L.Trainer, seconds: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(the run's metrics.json, each replica's)``; for one replica both are the same run's."""
    import torch

    from posenc_exp.perplexity import POSITION_LOSS
    from posenc_exp.replicas import replica_logged, replica_overrides, summary

    logged = module.logged
    common: dict[str, Any] = {
        "val_loss_floor": module.loss_floor,
        "train_length": module.train_length,
        "epochs": trainer.current_epoch,
        "optimizer_steps": trainer.global_step,
        "wall_time_s": round(seconds, 3),
        "threads": torch.get_num_threads(),
        **datamodule.provenance(),  # e.g. the text corpus's fingerprint
    }
    final = module.net.encoding.snapshot()
    several = module.replicas > 1
    replicas = []
    for k in range(module.replicas):
        replica_metrics = {
            "seed": cfg.seed + k,
            **run_metrics(replica_logged(logged, k) if several else logged, module, common),
            "dropped": not module.alive[k].item(),
            "overrides": replica_overrides(job_overrides(), cfg.seed + k) if several else job_overrides(),
            "encoding_initial": encoding_as_list(module.encoding_initial, k),
            "encoding_final": encoding_as_list(final, k),
        }
        if module.position_loss is not None:  # language modelling: the curve of posenc_exp.perplexity
            replica_metrics[POSITION_LOSS] = {
                "length": module.eval_lengths[-1],
                "loss": module.position_loss[k].tolist(),
            }
        replicas.append(replica_metrics)
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_score.item() if checkpoint and checkpoint.best_model_score else None
    if not several:
        metrics = {**replicas[0], "best_val_loss": best}
        del metrics["seed"], metrics["dropped"]
        return metrics, replicas
    runs = [{"replica": k, "dir": REPLICA_DIR.format(k), **r} for k, r in enumerate(replicas)]
    metrics = {**run_metrics(logged, module, common), "best_val_loss": best, "overrides": job_overrides()}
    metrics.update(summary(replicas), replicas=[{k: r[k] for k in REPLICA_SUMMARY_KEYS if k in r} for r in runs])
    return metrics, replicas


# What the run's metrics.json lists of each replica (the rest is in replica_<k>/metrics.json).
REPLICA_SUMMARY_KEYS = ("replica", "dir", "seed", "dropped", "train_loss", "val_loss", "val_score")


def run_metrics(logged: dict[str, float], module: PosEncModule, common: dict[str, Any]) -> dict[str, Any]:
    """The losses and per-length metrics of one run (or one replica) from its logged values."""
    return {
        "train_loss": logged.get("train/loss", math.nan),
        "val_loss": logged.get("val/loss", math.nan),
        "val_loss_gap": logged.get("val/loss_gap"),
        **({"val_score": logged["val/score"]} if "val/score" in logged else {}),  # scored tasks (data.chomsky)
        "eval": per_length_metrics(logged, module),
        **common,
    }


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


HELP_FLAGS = ("--help", "-h")


def print_help(cfg: DictConfig, overrides: list[str]) -> None:
    """``--help``: Hydra's help text (its ``hydra.help`` header and footer, the config groups, the config ``cfg``
    composed with ``overrides``), without Hydra's own listing, which copies its whole config repository once for
    each of the 141 groups it walks (Hydra's and the schemas' included): about 1 s on the 2-core machine, more
    than the rest of the start-up. The groups are listed as users choose them: no ``schema/...``, no ``_`` bases."""
    groups = "\n".join(f"{group}: {', '.join(options)}" for group, options in config_groups(overrides).items())
    config = OmegaConf.to_yaml({k: v for k, v in cfg.items() if k != "hydra"}, resolve=False)
    print(
        f"{cfg.hydra.help.header}\n== Configuration groups ==\nCompose your configuration from those groups "
        f"(group=option)\n\n{groups}\n\n\n== Config ==\nOverride anything in the config (foo.bar=value)\n\n"
        f"{config}\n\n{cfg.hydra.help.footer}\n"
    )


def main() -> None:
    """Check the command line (renamed keys, group choices, sweeper plugins, every override, the run directory)
    and refuse a bad one in one line, exit code 2, before Hydra makes a directory; then run Hydra's entry point."""
    quiet_third_party()
    args = sys.argv[1:]
    try:
        check_renamed(args)
        check_group_choices(args)
        check_sweeper_plugins(args)
        if any(arg in HELP_FLAGS for arg in args):  # the overrides checked as for a run, then the help
            overrides = [arg for arg in args if not arg.startswith("-")]
            print_help(check_overrides(overrides), overrides)
            return
        if (composed := check_overrides(args)) is not None:
            check_output_dir(composed, multirun=any(arg in ("-m", "--multirun") for arg in args))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
