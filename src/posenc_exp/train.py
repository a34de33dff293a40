"""Train one experiment: ``python -m posenc_exp.train [overrides]``; ``-m`` sweeps.

A thin ``main`` under ``@hydra.main`` around :func:`train`, which builds everything from the composed config
with ``hydra.utils.instantiate``, fits, writes ``metrics.json`` and returns the metrics.
"""

from __future__ import annotations

import importlib.util
import json
import math
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
from posenc_exp.config import ConfigError, check_group_choices, check_output_dir, check_overrides, validate
from posenc_exp.data import SyntheticDataModule
from posenc_exp.encodings import LengthError
from posenc_exp.module import NonFiniteLossError, PosEncModule
from posenc_exp.report import FAILURE_FILE, METRICS_FILE, parse_overrides, write_json

# Errors that are the user's input, reported as one line rather than a traceback.
USER_ERRORS = (ConfigError, NonFiniteLossError, LengthError)
# The run's record of its config, as Hydra names it. Written by write_record, not by Hydra (conf/hydra/default.yaml
# sets hydra.output_subdir: null), so that a run that fails while it is checked and built leaves nothing behind.
RECORD_DIR = ".hydra"


class ForeignJobError(ConfigError):
    """A sweep job directory that holds another command's job: refused, and nothing written into it."""


def thread_budget(cfg: DictConfig) -> int | None:
    """Torch threads for each process of this job, or ``None`` for torch's default.

    ``cfg.threads`` if set. Otherwise the usable cores (``joblib.cpu_count()``: affinity and cgroup quotas
    respected) divided among the processes that run at once: under the joblib launcher its
    ``hydra.launcher.n_jobs`` parallel jobs (joblib's meaning: -1 all cores, -2 all but one, None one),
    times the ranks of a DDP-on-CPU trainer; under submitit, ``hydra.launcher.cpus_per_task`` if set.
    """
    if cfg.get("threads"):
        return int(cfg.threads)
    launcher = HydraConfig.get().launcher if HydraConfig.initialized() else {}
    target = str(launcher.get("_target_", ""))
    if "submitit" in target and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    devices = OmegaConf.select(cfg, "trainer.devices")
    ranks = devices if OmegaConf.select(cfg, "trainer.accelerator") == "cpu" and isinstance(devices, int) else 1
    n_jobs = (launcher.get("n_jobs") or 1) if "joblib" in target else 1
    if n_jobs == 1 and ranks <= 1:
        return None
    from joblib import cpu_count

    cores = cpu_count()
    jobs = max(1, cores + 1 + n_jobs) if n_jobs < 0 else n_jobs
    return max(1, cores // (jobs * max(1, ranks)))


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


def per_length_metrics(logged: dict[str, float], module: PosEncModule) -> dict[str, dict[str, float]]:
    """``{"<length>": {"<metric>": value}}`` from the logged ``val/<metric>@len=<length>`` values."""
    return {
        str(n): {name: logged.get(f"val/{name}@len={n}", math.nan) for name in module.metric_names()}
        for n in module.eval_lengths
    }


def print_summary(metrics: dict[str, Any]) -> None:
    """The seed printed the encodings before and after training; this prints them as a table."""
    initial, final = metrics["encoding_initial"], metrics["encoding_final"]
    if initial is not None and initial == final:
        print("\nencoding: fixed, unchanged by training")
    elif initial is not None:
        wide = isinstance(initial[0], list)  # a table: one row per position (per bucket for t5)
        row, label = ("row", "row norm") if wide else ("position", "value")
        norm = lambda row: math.sqrt(sum(v * v for v in row)) if wide else row  # noqa: E731
        print(f"\n{row:>8} | {'initial ' + label:>16} | {'final ' + label:>16} | {'change':>9}")
        print(f"{'-' * 8}-+-{'-' * 16}-+-{'-' * 16}-+-{'-' * 9}")
        for i, (a, b) in enumerate(zip(initial, final, strict=True)):
            print(f"{i:>8} | {norm(a):>16.4f} | {norm(b):>16.4f} | {norm(b) - norm(a):>+9.4f}")
    floor = metrics.get("val_loss_floor")
    print(
        f"\nepochs={metrics['epochs']}  train_loss={metrics['train_loss']:.4f}  "
        f"val_loss={metrics['val_loss']:.4f}" + (f"  (best achievable {floor:.4f})" if floor is not None else "")
    )
    if len(metrics["eval"]) > 1:
        names = list(next(iter(metrics["eval"].values())))
        print(f"\n{'length':>8} | " + " | ".join(f"{name:>9}" for name in names))
        for length, values in metrics["eval"].items():
            mark = "*" if int(length) == metrics["train_length"] else " "
            print(f"{length:>7}{mark} | " + " | ".join(f"{values[name]:>9.4f}" for name in names))
        print("(* the training length)")


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"


def job_overrides() -> list[str]:
    """This job's overrides, sweep values included (what ``.hydra/overrides.yaml`` holds)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def check_distributed_sweep(cfg: DictConfig) -> None:
    """Refuse Lightning's ``ddp`` over several processes inside ``-m``, except under Slurm.

    ``ddp`` starts ranks 1.. by re-running the command line (``sys.argv``); inside ``-m`` that reruns the
    whole sweep in every rank. Under the submitit_slurm launcher each Slurm task is a rank started by
    srun and Lightning re-runs nothing.
    """
    strategy = OmegaConf.select(cfg, "trainer.strategy")
    if not is_multirun() or strategy not in ("ddp", "ddp_find_unused_parameters_true"):
        return
    if OmegaConf.select(cfg, "trainer.devices") == 1 and OmegaConf.select(cfg, "trainer.num_nodes", default=1) == 1:
        return
    if str(HydraConfig.get().launcher.get("_target_", "")).endswith("SlurmLauncher"):
        return
    raise ConfigError(
        f"trainer.strategy={strategy} is not allowed inside -m on one machine: Lightning re-runs the command "
        "for every rank, which would rerun the whole sweep; run DDP jobs one command at a time, or sweep with "
        "hydra/launcher=submitit_slurm hydra.launcher.tasks_per_node=<trainer.devices>"
    )


def check_job_directory(cfg: DictConfig) -> None:
    """In a sweep, refuse a job directory that holds another command's job: its ``.hydra/overrides.yaml`` (or
    ``metrics.json``) lists other overrides, i.e. a different sweep in the same ``hydra.sweep.dir``. Checked
    before anything in it is written, so the other job's record stays as it was; ``force=true`` overwrites."""
    output_dir = Path(cfg.paths.output_dir)
    recorded, metrics = output_dir / RECORD_DIR / "overrides.yaml", output_dir / METRICS_FILE
    if cfg.get("force"):
        return
    if recorded.is_file():
        previous = [str(o) for o in OmegaConf.load(recorded) or []]
    elif metrics.is_file():
        previous = json.loads(metrics.read_text()).get("overrides")
    else:
        return
    if previous is not None and parse_overrides(previous) != parse_overrides(job_overrides()):
        raise ForeignJobError(
            f"{output_dir} holds a job of other overrides ({' '.join(previous)}): resume with the same sweep "
            "command, choose another hydra.sweep.dir, or force=true to overwrite"
        )


def finished_metrics(cfg: DictConfig) -> dict[str, Any] | None:
    """In a sweep, this job's results from an earlier run of the same command: ``metrics.json`` already in
    its directory (:func:`check_job_directory` has made sure it is this job's). ``None`` with ``force=true``
    or without the file."""
    path = Path(cfg.paths.output_dir) / METRICS_FILE
    if cfg.get("force") or not path.is_file():
        return None
    return json.loads(path.read_text())


def write_record(cfg: DictConfig) -> None:
    """``.hydra/``: ``config.yaml`` (this config), ``hydra.yaml`` (Hydra's) and ``overrides.yaml`` (the command
    line's, sweep values included), the files Hydra itself would write before the run."""
    if not HydraConfig.initialized():
        return
    record = Path(cfg.paths.output_dir) / RECORD_DIR
    record.mkdir(parents=True, exist_ok=True)
    hydra_cfg = HydraConfig.get()
    OmegaConf.save(cfg, record / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), record / "hydra.yaml")
    OmegaConf.save(hydra_cfg.overrides.task, record / "overrides.yaml")


def remove_if_empty(directory: Path) -> None:
    """Remove a failed single run's directory if nothing is in it (an empty Hydra log file counts as nothing)."""
    log = directory / f"{HydraConfig.get().job.name}.log" if HydraConfig.initialized() else None
    if log is not None and log.is_file() and log.stat().st_size == 0:
        log.unlink()
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()


def record_failure(cfg: DictConfig, error: BaseException) -> None:
    """``error.txt`` in a failed sweep job's directory: the report lists the job with this line."""
    line = str(error) if isinstance(error, USER_ERRORS) else f"{type(error).__name__}: {error}"
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / FAILURE_FILE).write_text(line.splitlines()[0] if line else type(error).__name__)


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
def building(component: str) -> Iterator[None]:
    """Any exception while ``component`` is built becomes one :class:`ConfigError` line naming it. A
    ``ConfigError`` raised by the component itself (through Hydra's ``InstantiationException``) is passed on
    as it is: it already names the key and what is allowed."""
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
        raise ConfigError(f"{component} could not be built: {type(root).__name__}: {message}".rstrip(": ")) from None


def component_name(cfg: DictConfig, group: str) -> str:
    """``group=option (target)``, or ``group (target)`` when the option is not known."""
    from hydra.core.hydra_config import HydraConfig

    choice = HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None
    target = OmegaConf.select(cfg, f"{group}._target_", default="")
    return f"{group}={choice} ({target})" if choice else f"{group} ({target})"


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, PosEncModule, L.Trainer]:
    """Seed, then instantiate the datamodule (set up), the module and the trainer from a composed config.

    Nothing is written yet (the logger makes its event file on first use); an exception while building any
    of them is one :class:`ConfigError` line naming the component (:func:`building`)."""
    L.seed_everything(cfg.seed, verbose=False)
    with building(component_name(cfg, "data")):
        datamodule: L.LightningDataModule = instantiate(cfg.data)
        datamodule.setup("fit")
    with building(f"{component_name(cfg, 'model')} with {component_name(cfg, 'encoding')}"):
        module = build_module(cfg, datamodule)
    with building(component_name(cfg, "logger")):
        logger = instantiate(cfg.logger) if cfg.get("logger") else False
    callbacks = []
    for name, callback in cfg.get("callbacks", {}).items():
        if callback is not None:
            with building(f"callbacks.{name} ({callback.get('_target_', '')})"):
                callbacks.append(instantiate(callback))
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a progress bar it may not show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    with building(component_name(cfg, "trainer")):
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
    if cfg.get("ckpt_path"):
        check_resumable(cfg.ckpt_path, module)
    if not is_multirun():  # a sweep job's record is written before it starts (the report lists failed jobs too)
        write_record(cfg)
    if (writer := tensorboard_writer(trainer)) is not None and trainer.is_global_zero:
        log_hparams(writer, hparams_of(cfg), ["train/loss", *module.validation_tags()])

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
    }
    if trainer.is_global_zero:
        write_json(Path(cfg.paths.output_dir) / METRICS_FILE, metrics, indent=2)
        print_summary(metrics)
    return metrics


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float:
    """Hydra's entry point; returns the objective (validation loss) for sweepers such as Optuna.

    In a sweep (``-m``): a job whose directory has ``metrics.json`` is skipped (its stored loss returned)
    unless ``force=true``, so rerunning a sweep command resumes it; a failed job writes ``error.txt``.
    """
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
        print(f"error: {error}", file=sys.stderr)
        if multirun:
            if not isinstance(error, ForeignJobError):
                record_failure(cfg, error)
            return math.nan  # one failed job must not take the rest of the sweep down with it
        remove_if_empty(Path(cfg.paths.output_dir))
        sys.exit(2 if isinstance(error, ConfigError) else 1)
    except Exception as error:
        if multirun:
            record_failure(cfg, error)
        raise


# Sweepers shipped as optional extras: the plugin module Hydra needs, and how to install it.
SWEEPER_PLUGINS = {"optuna": ("hydra_plugins.hydra_optuna_sweeper", "pip install -e '.[optuna]'")}


def check_sweeper_plugins(overrides: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """One error line, before Hydra's screenful, when ``hydra/sweeper=<name>`` or an ``hparams_search``
    option that selects it needs a sweeper plugin that is not installed."""
    for override in overrides:
        key, _, option = override.lstrip("+").partition("=")
        sweepers = [option] if key == "hydra/sweeper" else []
        if key == "hparams_search" and (preset := config_dir / key / f"{option}.yaml").is_file():
            defaults = OmegaConf.load(preset).get("defaults") or []
            sweepers = [e[k] for e in defaults if isinstance(e, DictConfig) for k in e if k.endswith("hydra/sweeper")]
        for sweeper in sweepers:
            module, install = SWEEPER_PLUGINS.get(sweeper, (None, None))
            if module and importlib.util.find_spec(module) is None:
                raise ConfigError(f"{override} needs the {sweeper} sweeper plugin, which is not installed: {install}")


def main() -> None:
    """Check the command line (group choices, sweeper plugins, every override, the run directory) and refuse a
    bad one in one line, exit code 2, before Hydra makes a directory; then run Hydra's entry point."""
    args = sys.argv[1:]
    try:
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
