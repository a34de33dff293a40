"""Replicas: ``replicas=K`` trains the runs ``seed..seed+K-1`` in one process, each exactly as its single run."""

from __future__ import annotations

import io
import math
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from helpers import FAST, REPO, fast_in_process, fork_cli, read_events, read_metrics, train_run
from omegaconf import OmegaConf

from posenc_exp.analysis.report import build_report
from posenc_exp.models.layers import Linear, replica, stack_replicas
from posenc_exp.module import PosEncModule
from posenc_exp.train import build

ATTENTION = [
    "model=attention",
    "model.causal=true",
    "model.d_model=16",
    "model.n_heads=2",
    "model.depth=1",
    "data=copy",
    "data.length=4",
    "data.n_train=256",
    "data.n_val=64",
    "data.batch_size=32",
    "trainer.max_epochs=2",
]
# The feed-forward model and the attention model with each encoding family (and a fixed, shared one); t5 also
# with data per replica.
CASES = {
    "feedforward": ["trainer.max_epochs=2"],
    "learned": [*ATTENTION, "encoding=learned"],
    "rope": [*ATTENTION, "encoding=rope"],
    "sinusoidal": [*ATTENTION, "encoding=sinusoidal"],  # a fixed encoding: one table shared by the replicas
    "t5": [*ATTENTION, "encoding=t5", "data.seed=${seed}"],
    "kerple": [*ATTENTION, "encoding=kerple"],  # a learned bias per head
    # positions drawn per replica from its own key: replica k draws as the single run seed + k
    "randomized": [*ATTENTION, "encoding=randomized", "encoding@encoding.base=learned"],
}
SEED, K = 5, 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """For each case: ``replicas`` (one run of K replicas from SEED) and ``seed<s>`` (the single runs)."""
    tmp = tmp_path_factory.mktemp("replicas")
    jobs = {}
    for case, overrides in CASES.items():
        jobs[(case, "replicas")] = [f"seed={SEED}", f"replicas={K}", *overrides]
        jobs.update({(case, f"seed{SEED + k}"): [f"seed={SEED + k}", *overrides] for k in range(K)})
    directories = {job: tmp / "_".join(job) for job in jobs}
    argvs = [[*FAST, f"hydra.run.dir={directories[job]}", *overrides] for job, overrides in jobs.items()]
    for (job, _), (code, stderr) in zip(jobs.items(), fork_cli(argvs, [REPO] * len(argvs)), strict=True):
        assert code == 0, f"{job}: exit {code}\n{stderr[-3000:]}"
    result: dict[str, dict[str, Path]] = {}
    for (case, name), directory in directories.items():
        result.setdefault(case, {})[name] = directory
    return result


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_each_replica_equals_its_single_run(runs: dict[str, dict[str, Path]], case: str) -> None:
    run = runs[case]["replicas"]
    for k in range(K):
        replica_metrics = read_metrics(run / f"replica_{k}")
        single = read_metrics(runs[case][f"seed{SEED + k}"])
        assert replica_metrics["seed"] == SEED + k
        for key in ("train_loss", "val_loss"):
            assert replica_metrics[key] == pytest.approx(single[key], rel=1e-4, abs=1e-6), (k, key)
        for length, values in single["eval"].items():
            for name, value in values.items():
                assert replica_metrics["eval"][length][name] == pytest.approx(value, rel=1e-4, abs=1e-5)
        initial, final = (single.get(key) for key in ("encoding_initial", "encoding_final"))
        if initial is not None:
            torch.testing.assert_close(torch.tensor(replica_metrics["encoding_initial"]), torch.tensor(initial))
            torch.testing.assert_close(
                torch.tensor(replica_metrics["encoding_final"]), torch.tensor(final), rtol=1e-4, atol=1e-5
            )
    # The replicas differ from each other (their own initialisation, and for t5 their own data).
    losses = [read_metrics(run / f"replica_{k}")["train_loss"] for k in range(K)]
    assert len(set(losses)) == K


@pytest.mark.slow
def test_the_run_directory_keeps_the_single_run_contract_per_replica(runs: dict[str, dict[str, Path]]) -> None:
    run = runs["t5"]["replicas"]
    metrics = read_metrics(run)
    assert [r["seed"] for r in metrics["replicas"]] == [SEED + k for k in range(K)]
    assert [r["dir"] for r in metrics["replicas"]] == [f"replica_{k}" for k in range(K)]
    replica_losses = [read_metrics(run / f"replica_{k}")["val_loss"] for k in range(K)]
    assert metrics["mean"]["val_loss"] == pytest.approx(sum(replica_losses) / K)
    assert metrics["std"]["val_loss"] > 0 and metrics["dropped"] == []
    for k in range(K):
        directory = run / f"replica_{k}"
        overrides = OmegaConf.to_container(OmegaConf.load(directory / ".hydra" / "overrides.yaml"))
        assert f"seed={SEED + k}" in overrides and not any(o.startswith("replicas=") for o in overrides)
        events = read_events(directory)
        assert [e.step for e in events.Scalars("val/loss")] == [0, 1]  # its own TensorBoard run, by epoch
        assert events.Scalars("val/loss")[-1].value == pytest.approx(replica_losses[k], rel=1e-6)
        assert {"view/encoding/bias", "view/attention/layer1@len=4"} <= set(events.Tags()["images"])  # its own views
    # The run's own events hold the mean, and no per-replica tag.
    top = read_events(run)
    assert not any("replica_" in tag for tag in top.Tags()["scalars"])
    assert top.Scalars("val/loss")[-1].value == pytest.approx(metrics["val_loss"], rel=1e-6)


@pytest.mark.slow
def test_one_checkpoint_holds_every_replica_and_resumes(runs: dict[str, dict[str, Path]], tmp_path: Path) -> None:
    run = runs["t5"]["replicas"]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    module = PosEncModule(**checkpoint["hyper_parameters"])
    module.load_state_dict(checkpoint["state_dict"])
    assert module.net.encoding.relative_bias.shape == (K, 32, 2)
    final = [read_metrics(run / f"replica_{k}")["encoding_final"] for k in range(K)]
    torch.testing.assert_close(module.net.encoding.snapshot(), torch.tensor(final))
    resumed = tmp_path / "resumed"
    train_run(resumed, f"seed={SEED}", f"replicas={K}", *CASES["t5"], f"ckpt_path={run}/checkpoints/last.ckpt",
              "trainer.max_epochs=3")  # fmt: skip
    metrics = read_metrics(resumed)
    assert metrics["epochs"] == 3 and len(metrics["replicas"]) == K


@pytest.mark.slow
def test_the_report_treats_replicas_like_seeds(runs: dict[str, dict[str, Path]]) -> None:
    report = build_report(runs["learned"]["replicas"])
    assert [run.overrides["seed"] for run in report.runs] == [str(SEED + k) for k in range(K)]
    (cell,) = report.cells
    mean, _, count = cell.stats("val_loss")
    assert count == K and mean == pytest.approx(read_metrics(runs["learned"]["replicas"])["mean"]["val_loss"])


def test_stacked_layers_keep_each_models_initialisation_and_output() -> None:
    """A stack of one-replica models computes, replica by replica, what each model computes alone."""
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(torch.nn.Sequential(Linear(5, 4), torch.nn.Tanh(), Linear(4, 2)))
    stacked = stack_replicas(models)
    x = torch.randn(3, 7, 5)
    out = stacked(x)
    assert out.shape == (3, 7, 2)
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k : k + 1], model(x[k : k + 1]))
        torch.testing.assert_close(replica(stacked, k)(x[k : k + 1]), model(x[k : k + 1]))
    torch.manual_seed(1)
    reference = torch.nn.Linear(5, 4)  # the first layer draws its initial values as torch.nn.Linear does
    torch.testing.assert_close(models[1][0].weight[0], reference.weight.detach())
    torch.testing.assert_close(models[1][0].bias[0], reference.bias.detach())
    shared = stacked(torch.randn(1, 7, 5))  # an input with a replica axis of 1 is shared by all replicas
    assert shared.shape == (3, 7, 2)


def test_a_non_finite_replica_is_dropped_and_the_others_go_on(tmp_path: Path) -> None:
    cfg = fast_in_process(tmp_path, "replicas=2", "trainer.max_epochs=2")
    datamodule, module, trainer = build(cfg)
    with torch.no_grad():
        for parameter in module.net.parameters():
            parameter[1] = math.nan  # replica 1 is broken from the start; replica 0 is healthy
    before = [p[0].clone() for p in module.net.parameters()]
    console = io.StringIO()
    with redirect_stdout(console):
        trainer.fit(module, datamodule=datamodule)
    assert module.alive.tolist() == [True, False]
    assert "replica 1 (seed=1)" in console.getvalue() and "the other replicas go on" in console.getvalue()
    assert trainer.current_epoch == 2  # the run went on
    for old, parameter in zip(before, module.net.parameters(), strict=True):
        assert torch.isfinite(parameter[0]).all() and not torch.equal(old, parameter[0])
    assert math.isfinite(module.logged["val/loss"])  # the mean over the finite replica
    assert not module.everyone  # the mask on the loss is on from now on
    trainer.save_checkpoint(tmp_path / "dropped.ckpt")
    resumed_cfg = fast_in_process(tmp_path / "resumed", "replicas=2", "trainer.max_epochs=3")
    datamodule, resumed, trainer = build(resumed_cfg)
    trainer.fit(resumed, datamodule=datamodule, ckpt_path=tmp_path / "dropped.ckpt")
    assert resumed.alive.tolist() == [True, False] and not resumed.everyone  # a resumed run keeps it out
    assert all(torch.isfinite(parameter[0]).all() for parameter in resumed.net.parameters())


@pytest.mark.slow
def test_replicas_with_seed_dependent_task_keys_are_refused(tmp_path: Path) -> None:
    result = train_run(tmp_path / "run", *FAST, "seed=50", "replicas=2", "data.xlen=${seed}", check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data.xlen" in errors[0] and "replicas=2" in errors[0]
    assert not (tmp_path / "run" / "metrics.json").exists()
