"""Schemas of ``conf/trainer`` (``lightning.Trainer``), with range checks for the keys the configs expose."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")
MAX_EPOCHS = 1_000_000  # more is not an experiment but a typo; a longer run resumes from last.ckpt
# Set by the launchers that start one process per node (Slurm's srun, torchrun): Lightning's cluster environments.
CLUSTER_VARIABLES = ("SLURM_NTASKS", "WORLD_SIZE")


@dataclass
class Trainer:
    _target_: str = MISSING
    max_epochs: int = MISSING
    accelerator: str = MISSING
    devices: Any = MISSING  # a count, -1 (every device), "auto", or a list of device ids
    num_nodes: int = MISSING
    strategy: str = MISSING
    check_val_every_n_epoch: int = MISSING
    num_sanity_val_steps: int = MISSING
    enable_model_summary: bool = MISSING
    log_every_n_steps: int = MISSING
    enable_progress_bar: bool = MISSING
    fast_dev_run: Any = MISSING  # false, true (one batch) or a number of batches
    default_root_dir: str = MISSING

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Lightning's meaning of each key, as ranges Lightning itself does not enforce (it accepts
        ``check_val_every_n_epoch=0`` or ``log_every_n_steps=-1`` and then misbehaves)."""
        from posenc_exp.checks import is_int, require_choice, require_int
        from posenc_exp.errors import ConfigError

        require_int("trainer.max_epochs", config.max_epochs, 1, MAX_EPOCHS)
        require_int(
            "trainer.check_val_every_n_epoch",
            config.check_val_every_n_epoch,
            1,
            MAX_EPOCHS,
            f"an integer, 1 <= check_val_every_n_epoch <= {MAX_EPOCHS} (validation every n epochs, and at the last)",
        )
        require_int("trainer.log_every_n_steps", config.log_every_n_steps, 1)
        require_int("trainer.num_sanity_val_steps", config.num_sanity_val_steps, -1, allowed="an integer >= -1")
        require_int("trainer.num_nodes", config.num_nodes, 1)
        if config.num_nodes > 1 and not any(v in os.environ for v in CLUSTER_VARIABLES):
            raise ConfigError(
                f"trainer.num_nodes={config.num_nodes} is not allowed here: more than one node needs a cluster "
                "launcher that starts a process per node (hydra/launcher=submitit_slurm with hydra.launcher.nodes="
                f"{config.num_nodes}), and this process was not started by one; it would wait for the others forever"
            )
        require_choice("trainer.accelerator", config.accelerator, ACCELERATORS)
        devices = config.devices
        ids = list(devices) if not isinstance(devices, int | float | str | bool) and devices is not None else None
        if not (
            devices == "auto"
            or (is_int(devices) and (devices >= 1 or devices == -1))
            or (ids and all(is_int(i) and i >= 0 for i in ids))
        ):
            raise ConfigError(
                f"trainer.devices={devices} is not allowed: expected a count >= 1, -1 (every device), auto, or a "
                "non-empty list of device ids"
            )
        cores = os.cpu_count() or 1
        if config.accelerator == "cpu" and is_int(devices) and not 1 <= devices <= cores:
            raise ConfigError(
                f"trainer.devices={devices} is not allowed with trainer.accelerator=cpu: expected a number of "
                f"processes from 1 to the {cores} cores of this machine"
            )
        fast = config.fast_dev_run
        if not (isinstance(fast, bool) or (is_int(fast) and fast >= 0)):
            raise ConfigError(
                f"trainer.fast_dev_run={fast} is not allowed: expected true, false or a number of batches >= 0"
            )


SCHEMAS = {"default": Trainer}  # ddp and ddp_cpu extend default, and its schema with it
