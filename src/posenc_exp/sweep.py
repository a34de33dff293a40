"""Sweep plumbing for ``python -m posenc_exp.train -m``: resume and failure records, the DDP-in-sweep refusal,
the thread budget per job, optional sweeper plugins, and the sweep's status file (a Hydra callback)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from posenc_exp import CONFIG_DIR
from posenc_exp.console import print_sweep_end
from posenc_exp.errors import USER_ERRORS, ConfigError
from posenc_exp.rundir import FAILURE_FILE, METRICS_FILE, OVERRIDES_FILE, STATUS_FILE, parse_overrides, write_json


def thread_budget(cfg: DictConfig) -> int:
    """Torch threads for each process of this job: ``cfg.threads`` if set, else under submitit
    ``hydra.launcher.cpus_per_task`` if set, else 1.

    One thread by default: the lab's models are tiny and overhead-bound, and gain little from a second
    thread, while torch's default pool (one thread per core) collapses when other processes share the
    cores: on a busy 2-core machine an attention run took 9x longer with the default pool than with one
    thread (``python -m posenc_exp.bench threads`` measures the policy idle and busy). Raise ``threads``
    for a large model on an otherwise idle machine.
    """
    if cfg.get("threads"):
        return int(cfg.threads)
    launcher = HydraConfig.get().launcher if HydraConfig.initialized() else {}
    if "submitit" in str(launcher.get("_target_", "")) and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    return 1


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


class ForeignJobError(ConfigError):
    """A sweep job directory that holds another command's job: refused, and nothing written into it."""


def check_job_directory(cfg: DictConfig) -> None:
    """In a sweep, refuse a job directory that holds another command's job: its ``.hydra/overrides.yaml`` (or
    ``metrics.json``) lists other overrides, i.e. a different sweep in the same ``hydra.sweep.dir``. Checked
    before anything in it is written, so the other job's record stays as it was; ``force=true`` overwrites."""
    output_dir = Path(cfg.paths.output_dir)
    recorded, metrics = output_dir / OVERRIDES_FILE, output_dir / METRICS_FILE
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


def record_failure(cfg: DictConfig, error: BaseException) -> None:
    """``error.txt`` in a failed sweep job's directory: the report lists the job with this line."""
    line = str(error) if isinstance(error, USER_ERRORS) else f"{type(error).__name__}: {error}"
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / FAILURE_FILE).write_text(line.splitlines()[0] if line else type(error).__name__)


class SweepStatus(Callback):
    """Hydra callback: ``<sweep dir>/sweep_status.json`` says whether the sweep is running or finished; at the
    end, the sweep's last console lines (:func:`posenc_exp.console.print_sweep_end`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._write(config, "running")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._write(config, "finished")
        print_sweep_end(Path(str(config.hydra.sweep.dir)))

    @staticmethod
    def _write(config: DictConfig, state: str) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        status = {"state": state, "pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
        write_json(sweep_dir / STATUS_FILE, status)


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
