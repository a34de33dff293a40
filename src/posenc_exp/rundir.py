"""The run directory's contract: the files a run or sweep job leaves, and how they are written.

A run directory (``outputs/runs/<time>`` or a sweep job's ``outputs/multiruns/<time>/<n>``) holds Hydra's
``.hydra/`` (with ``overrides.yaml``; written once the run is checked and built, so a refused run leaves no
directory), TensorBoard event files, ``checkpoints/``, and, written last and
atomically, ``metrics.json``: a directory with it holds finished results, one without it does not. A sweep job
that failed holds ``error.txt`` instead. A sweep directory also holds ``sweep_status.json``.
Training, the diagnostics callback, the sweep plumbing and the analysis tools all import these names from here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

METRICS_FILE = "metrics.json"  # a finished run's results (posenc_exp.train)
FAILURE_FILE = "error.txt"  # the one-line error of a failed sweep job (posenc_exp.train)
STATUS_FILE = "sweep_status.json"  # a sweep's state: running or finished (posenc_exp.sweep.SweepStatus)
DIAGNOSTICS_FILE = "diagnostics.json"  # the depth-study measurements (callbacks=diagnostics)
# The run's record of its config, as Hydra names it. Written by write_record, not by Hydra (conf/hydra/default.yaml
# sets hydra.output_subdir: null), so that a run refused while it is checked and built leaves nothing behind.
RECORD_DIR = ".hydra"
OVERRIDES_FILE = Path(RECORD_DIR) / "overrides.yaml"  # the run's command-line overrides (Hydra's)
REPLICA_DIR = "replica_{}"  # replica k's own run directory inside a run of several replicas (posenc_exp.replicas)
IGNORED_KEYS = ("force",)  # overrides that do not change what a run computes


def write_record(cfg: DictConfig) -> None:
    """``.hydra/``: ``config.yaml`` (this config), ``hydra.yaml`` (Hydra's) and ``overrides.yaml`` (the command
    line's, sweep values included), the files Hydra itself would write before the run: written by
    ``posenc_exp.train`` once a run is checked and built, once a sweep job's directory is checked."""
    if not HydraConfig.initialized():
        return
    record = Path(cfg.paths.output_dir) / RECORD_DIR
    record.mkdir(parents=True, exist_ok=True)
    hydra_cfg = HydraConfig.get()
    OmegaConf.save(cfg, record / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), record / "hydra.yaml")
    OmegaConf.save(hydra_cfg.overrides.task, record / OVERRIDES_FILE.name)


def remove_if_empty(directory: Path) -> None:
    """Remove a refused run's directory if nothing else is in it than Hydra's log of the job (which holds only
    what the console showed: Lightning's start-up lines, when the trainer was built before the refusal)."""
    if HydraConfig.initialized():
        (directory / f"{HydraConfig.get().job.name}.log").unlink(missing_ok=True)
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()


def write_json(path: Path, payload: dict[str, Any], indent: int | None = None) -> None:
    """Write atomically (a temporary file, then a rename), so a crash never leaves a half-written file that
    could pass for results or for a sweep's status."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=indent))
    partial.replace(path)


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """``["a.b=1", "+c=x"]`` -> ``{"a.b": "1", "c": "x"}``; ``~key`` deletions map to ``"<deleted>"``."""
    parsed = {}
    for override in overrides:
        key, _, value = override.partition("=")
        if key.startswith("~"):
            parsed[key[1:]] = "<deleted>"
        else:
            parsed[key.lstrip("+")] = value
    return {k: v for k, v in parsed.items() if k not in IGNORED_KEYS}


def flatten(payload: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The leaves of a nested dict (``metrics.json``, a resolved config), keys joined by ``/`` (``eval/40/acc``)."""
    flat: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def numbers(payload: dict[str, Any]) -> dict[str, float]:
    """The numeric leaves of :func:`flatten` (booleans, strings and lists left out), as floats."""
    return {k: float(v) for k, v in flatten(payload).items() if isinstance(v, int | float) and not isinstance(v, bool)}
