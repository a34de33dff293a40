"""Length generalization end to end: combination checks, per-length metrics in metrics.json and TensorBoard,
the experiment's sweep under the joblib launcher and its table."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import read_events, read_metrics, run_cli, train_run
from hydra.utils import instantiate

from posenc_exp.config import ConfigError, compose_train, validate
from posenc_exp.train import build_module

ATTENTION = ["model=attention", "model.causal=true"]
# A tiny attention run on a token task: 2 epochs of 4 steps, evaluated at 4, 5, 6 and 8 items.
TINY_TOKENS = [
    *ATTENTION,
    "model.d_model=8",
    "model.n_heads=2",
    "model.depth=1",
    "data.length=4",
    "data.n_train=64",
    "data.n_val=16",
    "data.batch_size=16",
    "trainer.max_epochs=2",
]

BAD_COMBINATIONS = [
    (["data=copy"], "model=feedforward"),
    (["data=ar"], "data.eval_factors"),
    (["encoding=rope"], "model=feedforward"),
    (["model=attention", "data=copy"], "model.causal"),
    (["model=attention", "model.n_heads=3"], "model.n_heads"),
    ([*ATTENTION, "encoding=rope", "model.d_model=12", "model.n_heads=4"], "model.d_model/model.n_heads"),
    (["model=attention", "data=ar", "encoding=learned", "encoding.max_positions=20"], "encoding.max_positions"),
    (
        ["model=attention", "data=ar", "encoding=sinusoidal", "encoding.learnable=true", "encoding.max_positions=9"],
        "max_positions",
    ),
    (["model=attention", "data=ar", "data.max_positions=20"], "data.max_positions"),
    ([*ATTENTION, "data=recall", "data.vocab_size=20"], "data.vocab_size"),
    (["model=attention", "data=ar", "data.coefficients=[1.1]"], "data.coefficients"),
    (["model=attention", "data=lag", "data.lag=17"], "data.lag"),
    (["model=attention", "model.norm=mid"], "model.norm"),
    (["model=attention", "data=ar", "data.eval_factors=[]"], "data.eval_factors"),
]


@pytest.mark.parametrize(("overrides", "key"), BAD_COMBINATIONS, ids=[" ".join(o) for o, _ in BAD_COMBINATIONS])
def test_impossible_combinations_fail_at_config_time_naming_the_key(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as error:
        validate(compose_train(overrides, return_hydra_config=True))
    assert "\n" not in str(error.value)


GOOD_COMBINATIONS = [
    ["data=lag", "data.eval_factors=[1.0]"],
    ["data=ar", "data.eval_factors=[1.0]", "encoding=sinusoidal"],
    ["model=attention", "data=random"],
    ["model=attention", "data=lag", "encoding=rope"],
    [*ATTENTION, "data=ar", "encoding=t5"],
    [*ATTENTION, "data=copy", "encoding=alibi"],
    [*ATTENTION, "data=recall", "encoding=learned"],
    ["model=attention", "data=sort", "model.causal=true", "encoding=sinusoidal", "model.softmax=false"],
]


@pytest.mark.parametrize("overrides", GOOD_COMBINATIONS, ids=[" ".join(o) for o in GOOD_COMBINATIONS])
def test_working_combinations_train_a_step(overrides: list[str]) -> None:
    cfg = compose_train(overrides)
    validate(cfg)
    for key in ("n_train", "n_val"):
        if key in cfg.data:
            cfg.data[key] = 16
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    module = build_module(cfg, datamodule)
    x, y = datamodule.splits["train"]  # (replica, sample, ...)
    loss = module.loss(module.net(x[:, :8]), y[:, :8]).sum()
    loss.backward()
    assert math.isfinite(loss.item())
    for n in datamodule.eval_lengths:  # every evaluation length goes through the model
        x_val, y_val = datamodule.splits["val" if n == datamodule.train_length else f"val@{n}"]
        with torch.no_grad():
            assert math.isfinite(module.loss(module.net(x_val[:, :4]), y_val[:, :4]).item())


def test_experiment_sweeps_encodings_and_tasks_with_joblib_and_seeds_as_replicas() -> None:
    cfg = compose_train(["experiment=length_generalization"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params.encoding.split(",") == ["none", "learned", "sinusoidal", "rope", "alibi", "t5"]
    assert params.data.split(",") == ["copy", "reverse", "sort", "ar"]
    assert "seed" not in params and cfg.replicas == 3  # the seeds are replicas of each job
    assert "joblib" in cfg.hydra.launcher._target_
    assert cfg.model._target_.endswith("AttentionStack") and cfg.model.causal
    for task in params.data.split(","):
        validate(compose_train(["experiment=length_generalization", f"data={task}", "encoding=learned"]))


@pytest.mark.slow
def test_token_run_logs_every_evaluation_length(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = train_run(run_dir, *TINY_TOKENS, "data=copy", "encoding=alibi")
    metrics = read_metrics(run_dir)
    assert metrics["train_length"] == 4
    assert list(metrics["eval"]) == ["4", "5", "6", "8"]
    for values in metrics["eval"].values():
        assert set(values) == {"loss", "acc", "seq_acc"}
        assert 0 <= values["seq_acc"] <= values["acc"] <= 1
    assert metrics["val_loss"] == metrics["eval"]["4"]["loss"]
    scalars = read_events(run_dir).Tags()["scalars"]
    for n, values in metrics["eval"].items():
        for name, value in values.items():
            events = read_events(run_dir).Scalars(f"val/{name}@len={n}")
            assert len(events) == 2  # one per epoch
            assert events[-1].value == pytest.approx(value)
    assert {"val/loss", "val/acc", "val/seq_acc"} <= set(scalars)
    assert "seq_acc" in result.stdout and "(* the training length)" in result.stdout


@pytest.mark.slow
def test_ar_run_logs_the_gap_to_sigma_squared(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train_run(run_dir, *TINY_TOKENS, "data=ar", "data.length=6", "encoding=rope", "data.sigma=0.5")
    metrics = read_metrics(run_dir)
    assert metrics["val_loss_floor"] == 0.25
    assert metrics["val_loss_gap"] == pytest.approx(metrics["val_loss"] - 0.25, abs=1e-6)
    assert list(metrics["eval"]) == ["6", "8", "9", "12"]
    for n, values in metrics["eval"].items():
        assert values["loss_gap"] == pytest.approx(values["loss"] - 0.25, abs=1e-6)
        assert read_events(run_dir).Scalars(f"val/loss_gap@len={n}")[-1].value == pytest.approx(values["loss_gap"])


@pytest.mark.slow
def test_bad_combination_on_the_cli_writes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = train_run(run_dir, "data=copy", "model=attention", check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    expected = "data=copy is trained with teacher forcing (the answer tokens are inputs) and needs model.causal=true"
    assert errors == [f"error: {expected}"]
    assert not run_dir.exists()  # refused before anything was written: no run directory at all


@pytest.mark.slow
def test_experiment_runs_under_joblib_and_tabulates(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run_cli(
        "-m",
        "experiment=length_generalization",
        "data=copy,ar",
        "encoding=t5",
        "seed=0",
        "trainer.max_epochs=1",
        "data.n_train=64",
        "data.n_val=16",
        "model.d_model=8",
        "model.depth=1",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name.isdigit()) == ["0", "1"]
    table = run_cli(str(sweep_dir), module="posenc_exp.analysis.tables").stdout.splitlines()
    assert table[0] == "| task | encoding | metric | seeds | 1x | 1.25x | 1.5x | 2x |"
    assert table[2].startswith("| copy | t5 | seq_acc (L=8) | 3 |")  # the job's 3 replicas count as seeds
    assert table[3].startswith("| ar | t5 | loss_gap (L=16) | 3 |")
    assert all(cell.strip() for cell in table[2].split("|")[1:-1])


@pytest.mark.parametrize("task", ["lag", "ar"])
def test_bias_identity_holds_for_the_feedforward_model_on_the_window_tasks(task: str) -> None:
    """``W1 (x + p) + b1 = W1 x + (W1 p + b1)`` on the new scalar-window tasks too (any ``p``, here its init)."""
    cfg = compose_train([f"data={task}", "data.eval_factors=[1.0]", "data.n_train=32", "data.n_val=32"])
    validate(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    torch.manual_seed(0)
    net = instantiate(cfg.model)
    x = datamodule.splits["val"][0]  # (replica, sample, length)
    with torch.no_grad():
        torch.testing.assert_close(net.fold_encoding()(x), net(x), rtol=1e-5, atol=1e-6)
