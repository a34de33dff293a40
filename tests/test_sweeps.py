"""Sweeps at scale: launcher presets, the Optuna search, one failed job, resuming and forcing, submitit."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from helpers import FAST, SMALL_SWEEP, read_metrics, run_cli
from omegaconf import OmegaConf

from posenc_exp import CONFIG_DIR
from posenc_exp.config import ConfigError, compose_train
from posenc_exp.sweep import SWEEPER_PLUGINS, check_sweeper_plugins

LAUNCHER_PRESETS = sorted(p.stem for p in (CONFIG_DIR / "hydra" / "launcher").glob("*.yaml"))
SEARCHES = sorted(p.stem for p in (CONFIG_DIR / "hparams_search").glob("*.yaml"))
TINY = ["trainer.max_epochs=2", "callbacks.progress_bar=null"]
OPTUNA_INSTALLED = importlib.util.find_spec(SWEEPER_PLUGINS["optuna"][0]) is not None


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


@pytest.mark.parametrize("name", LAUNCHER_PRESETS)
def test_launcher_preset_composes_onto_the_plugin_config(name: str) -> None:
    preset = OmegaConf.load(CONFIG_DIR / "hydra" / "launcher" / f"{name}.yaml")
    launcher = compose_train([f"hydra/launcher={name}"], return_hydra_config=True).hydra.launcher
    composed = OmegaConf.to_container(launcher, resolve=False)
    assert {k: composed[k] for k in preset} == OmegaConf.to_container(preset, resolve=False)
    assert set(composed) > set(preset), "the plugin's own fields should be merged in"


def test_slurm_preset_has_the_cluster_keys() -> None:
    launcher = compose_train(["hydra/launcher=submitit_slurm"], return_hydra_config=True).hydra.launcher
    for key in ("partition", "timeout_min", "nodes", "tasks_per_node", "gpus_per_node", "gpus_per_task"):
        assert key in launcher
    assert launcher.cpus_per_task >= 1 and launcher.mem_gb >= 1 and launcher.timeout_min >= 1
    assert launcher.submitit_folder.endswith("/.submitit/%j"), "submitit logs inside the sweep directory"


@pytest.mark.parametrize("name", SEARCHES)
def test_hparams_search_composes_over_existing_keys(name: str) -> None:
    if not OPTUNA_INSTALLED:
        pytest.skip("the optional Optuna sweeper is not installed: pip install -e '.[optuna]'")
    cfg = compose_train([f"hparams_search={name}"], return_hydra_config=True)
    assert "optuna" in cfg.hydra.sweeper._target_
    assert cfg.hydra.sweeper.direction == "minimize"
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, f"search space key {key} is not in the train config"


def test_missing_sweeper_plugin_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SWEEPER_PLUGINS, "optuna", ("hydra_plugins.not_installed_sweeper", "pip install X"))
    for override in ("hparams_search=optuna", "hydra/sweeper=optuna"):
        with pytest.raises(ConfigError, match=rf"^{override} needs the optuna sweeper plugin.*pip install X$"):
            check_sweeper_plugins([override])
    check_sweeper_plugins(["hparams_search=null", "seed=1"])


@pytest.mark.slow
def test_one_failed_job_leaves_the_others_and_each_job_runs_one_thread(small_sweep: Path) -> None:
    console = (small_sweep.parent / "console.txt").read_text()
    assert console.count("error: model.n_hidden=0 is not allowed") == 4
    finished, failed = [], []
    for job in job_dirs(small_sweep):
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        (failed if "model.n_hidden=0" in overrides else finished).append(job)
    assert len(job_dirs(small_sweep)) == 12 and len(finished) == 8
    for job in failed:
        assert "model.n_hidden=0 is not allowed" in (job / "error.txt").read_text()
        assert not (job / "metrics.json").exists() and not (job / "checkpoints").exists()
    for job in finished:
        metrics = read_metrics(job)
        assert metrics["epochs"] == 3 and metrics["val_loss"] > 0
        assert metrics["threads"] == 1, "one torch thread per job unless threads= says otherwise"
    assert json.loads((small_sweep / "sweep_status.json").read_text())["state"] == "finished"


@pytest.mark.slow
def test_rerunning_a_sweep_skips_finished_jobs(small_sweep: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(small_sweep, sweep_dir)
    before = {
        job.name: (job / "metrics.json").read_text() for job in job_dirs(sweep_dir) if (job / "metrics.json").exists()
    }

    result = run_cli("-m", *SMALL_SWEEP, f"hydra.sweep.dir={sweep_dir}")  # the basic launcher this time

    skipped = [line for line in result.stdout.splitlines() if line.startswith("skip: ")]
    assert len(skipped) == 8 and all("metrics.json" in line for line in skipped)
    assert {job.name: (job / "metrics.json").read_text() for job in job_dirs(sweep_dir) if job.name in before} == before
    assert result.stderr.count("error: model.n_hidden=0 is not allowed") == 4, "failed jobs run again"
    for job in job_dirs(sweep_dir):
        assert (job / "error.txt").exists() == (job.name not in before)


@pytest.mark.slow
def test_force_reruns_and_another_sweep_in_the_same_dir_is_refused(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run_cli("-m", *FAST, "seed=0", f"hydra.sweep.dir={sweep_dir}")
    first = read_metrics(sweep_dir / "0")

    recorded = (sweep_dir / "0" / ".hydra" / "overrides.yaml").read_text()
    other = run_cli("-m", *FAST, "seed=1", f"hydra.sweep.dir={sweep_dir}")
    assert "holds a job of other overrides" in other.stderr and "force=true" in other.stderr
    assert read_metrics(sweep_dir / "0") == first
    # Refused before anything in the directory changed: the first sweep's record still says seed=0.
    assert (sweep_dir / "0" / ".hydra" / "overrides.yaml").read_text() == recorded and "seed=0" in recorded
    assert not (sweep_dir / "0" / "error.txt").exists()

    forced = run_cli("-m", *FAST, "seed=1", "force=true", f"hydra.sweep.dir={sweep_dir}")
    assert "skip: " not in forced.stdout
    rerun = read_metrics(sweep_dir / "0")
    assert "seed=1" in rerun["overrides"] and rerun["val_loss"] != first["val_loss"]
    assert not (sweep_dir / "0" / "error.txt").exists()


@pytest.mark.slow
def test_submitit_local_sweep_runs_end_to_end(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run_cli("-m", "hydra/launcher=submitit_local", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep_dir}")
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 2
    for seed, job in enumerate(jobs):
        metrics = read_metrics(job)
        assert f"seed={seed}" in metrics["overrides"] and metrics["epochs"] == 2
        assert metrics["threads"] == 1, "hydra.launcher.cpus_per_task sets the torch threads"
    submitit_logs = list((sweep_dir / ".submitit").glob("*/*_result.pkl"))
    assert len(submitit_logs) == 2, "each job went through submitit"


@pytest.mark.slow
@pytest.mark.skipif(
    not OPTUNA_INSTALLED, reason="the optional Optuna sweeper is not installed: pip install -e '.[optuna]'"
)
def test_optuna_search_minimises_the_returned_val_loss(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    trials = ["hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=1"]
    run_cli("-m", "hparams_search=optuna", *trials, *FAST, f"hydra.sweep.dir={sweep_dir}")
    losses = [read_metrics(job)["val_loss"] for job in job_dirs(sweep_dir)]
    assert len(losses) == 2
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.best_value == pytest.approx(min(losses))
    assert set(best.best_params) == set(compose_train(["hparams_search=optuna"], True).hydra.sweeper.params)
