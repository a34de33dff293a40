"""The submitit Slurm launcher against a real Slurm: a one-node cluster on this machine (``scripts/slurm.sh
start``, which ``.ci/run`` calls as root). A two-job sweep and a two-rank ``trainer=ddp_cpu`` job go through
``sbatch``/``srun``; every job's ``metrics.json`` is read back. Skipped, with the reason, where no Slurm answers.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import read_metrics, run_cli

pytestmark = pytest.mark.slow
TINY = ["trainer.max_epochs=2", "callbacks.progress_bar=null"]
# One core and 1 GB per task, so the jobs fit any one-node cluster of 2 cores; 5 minutes at most each.
SLURM = [
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=5",
]


def slurm_idle_cpus() -> int:
    """The idle CPUs of the default partition, or 0 when no Slurm controller answers."""
    if shutil.which("sinfo") is None:
        return 0
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
        sinfo = subprocess.run(["sinfo", "-h", "-o", "%C"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if ping.returncode or "UP" not in ping.stdout or sinfo.returncode:
        return 0
    allocated_idle = sinfo.stdout.split()[0].split("/") if sinfo.stdout.split() else ["0", "0"]
    return int(allocated_idle[1])


@pytest.fixture(scope="module")
def slurm() -> None:
    cpus = slurm_idle_cpus()
    if cpus < 2:
        reason = "no Slurm answers here" if shutil.which("sinfo") is None or cpus == 0 else f"{cpus} idle CPU"
        pytest.skip(f"{reason}: start a one-node cluster as root with scripts/slurm.sh start (docs/clusters.md)")


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def test_sweep_runs_as_a_slurm_job_array(slurm: None, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run_cli("-m", *SLURM, *TINY, "model.n_hidden=4,8", f"hydra.sweep.dir={sweep_dir}")
    jobs = job_dirs(sweep_dir)
    assert [p.name for p in jobs] == ["0", "1"]
    for job in jobs:
        metrics = read_metrics(job)
        assert metrics["epochs"] == 2 and metrics["optimizer_steps"] == 2 * 9
        assert metrics["threads"] == 1, "a job's torch threads are the launcher's cpus_per_task"
    # submitit went through sbatch: one job array, a log pair and a result per array task
    assert len(list(sweep_dir.glob(".submitit/*/*_submission.sh"))) == 1
    assert len(list(sweep_dir.glob(".submitit/*/*_result.pkl"))) == 2


def test_ddp_job_runs_one_rank_per_slurm_task(slurm: None, tmp_path: Path) -> None:
    """``trainer=ddp_cpu`` under ``-m`` is refused on one machine but runs under Slurm: srun starts the two
    ranks (``tasks_per_node=2``) and Lightning takes them from Slurm's environment. Batch 4 per rank on 72
    training samples: 9 optimizer steps per epoch, as a single process with batch 8 takes."""
    sweep_dir = tmp_path / "ddp"
    ddp = ["trainer=ddp_cpu", "data.batch_size=4", "hydra.launcher.tasks_per_node=2"]
    run_cli("-m", *SLURM, *TINY, *ddp, f"hydra.sweep.dir={sweep_dir}")
    (job,) = job_dirs(sweep_dir)
    metrics = read_metrics(job)
    assert metrics["epochs"] == 2 and metrics["optimizer_steps"] == 2 * 9
    assert len(list(job.glob("events.out*"))) == 1, "rank 0 alone writes the event file"
    task_logs = sorted(p.name for p in sweep_dir.glob(".submitit/*/*_log.err"))
    assert len(task_logs) == 2, f"one Slurm task per rank: {task_logs}"
    ranks = "".join(p.read_text() for p in sweep_dir.glob(".submitit/*/*_log.err"))
    assert "MEMBER: 1/2" in ranks and "MEMBER: 2/2" in ranks
