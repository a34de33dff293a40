"""Replicas of a run: ``replicas=K`` trains the runs ``seed=<seed + k>``, ``k < K``, in one process.

Replica ``k`` is exactly the run with ``seed=<seed + k>``: every key that interpolates ``seed`` follows (e.g.
``data.seed: ${seed}`` gives each replica its own data), the network of replica ``k`` is initialised as that
run's (``posenc_exp.module.build_net``), and one optimizer step per mini-batch updates every replica with
its own loss's gradient. The run directory keeps the single-run contract for each replica in
``replica_<k>/`` (``metrics.json``, TensorBoard events, ``.hydra/overrides.yaml`` with its seed), so
reports and TensorBoard treat replicas like seeds; one checkpoint holds them all, and the run's own
``metrics.json`` lists the replicas with the mean and standard deviation of their metrics.
"""

from __future__ import annotations

import copy
import statistics
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from posenc_exp.errors import ConfigError
from posenc_exp.loggers import replica_tag_suffix
from posenc_exp.rundir import METRICS_FILE, OVERRIDES_FILE, REPLICA_DIR, numbers, write_json


def replica_config(cfg: DictConfig, replica: int) -> DictConfig:
    """The config of replica ``replica``: the run's with ``seed=<seed + replica>``, interpolations following."""
    config = copy.deepcopy(cfg)
    config.seed = cfg.seed + replica
    return config


def data_seeds(cfg: DictConfig) -> list[int] | None:
    """The data seed of each replica when the data config depends on ``seed`` (``data.seed: ${seed}``), else
    ``None``: the replicas share one data set. Any other data key that depends on ``seed`` is refused."""
    replicas = cfg.get("replicas", 1)
    configs = [OmegaConf.to_container(replica_config(cfg, k).data, resolve=True) for k in range(replicas)]
    if all(c == configs[0] for c in configs):
        return None
    for key in configs[0]:
        if key != "seed" and any(c[key] != configs[0][key] for c in configs):
            raise ConfigError(
                f"replicas={replicas}: data.{key} depends on seed, so the replicas would see different tasks; "
                "only data.seed may follow the seed (or train the seeds as separate runs with -m seed=...)"
            )
    return [int(c["seed"]) for c in configs]


def replica_logged(logged: dict[str, float], replica: int) -> dict[str, float]:
    """Replica ``replica``'s logged values under their plain tags (``val/loss/replica_2`` -> ``val/loss``)."""
    suffix = replica_tag_suffix(replica)
    return {k.removesuffix(suffix): v for k, v in logged.items() if k.endswith(suffix)}


def replica_overrides(overrides: list[str], seed: int) -> list[str]:
    """The run's overrides as replica ``seed``'s single run would have them: ``seed=<seed>``, no ``replicas``."""
    kept = [o for o in overrides if o.lstrip("+~").partition("=")[0] not in ("seed", "replicas")]
    return [*kept, f"seed={seed}"]


def write_replica_dir(run_dir: Path, replica: int, metrics: dict[str, Any]) -> None:
    """``replica_<k>/``: the replica's ``.hydra/overrides.yaml`` (its seed) and ``metrics.json``."""
    directory = run_dir / REPLICA_DIR.format(replica)
    (directory / OVERRIDES_FILE).parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(metrics["overrides"]), directory / OVERRIDES_FILE)
    write_json(directory / METRICS_FILE, metrics, indent=2)


def summary(replicas: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation over the finite replicas of each number in their ``metrics.json``
    (nested ``eval`` values included), and which replicas were dropped as non-finite."""
    values: dict[str, list[float]] = {}
    for metrics in replicas:
        if metrics.get("dropped"):
            continue
        for key, value in numbers(metrics).items():
            if key != "seed":
                values.setdefault(key, []).append(value)
    return {
        "mean": {k: statistics.fmean(v) for k, v in values.items()},
        "std": {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in values.items()},
        "dropped": [m["seed"] for m in replicas if m.get("dropped")],
    }
