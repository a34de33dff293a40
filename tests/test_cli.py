"""The real CLI as a subprocess (issue 2): the run-directory contract, the console, TensorBoard's event files
and HParams session read back with TensorBoard's own reader, sweeps, resuming, reproducibility, bad input,
a non-finite loss, and an end-to-end browse through a real ``tensorboard`` server.

The runs are tiny (3 epochs of the default model); tests that only read a run share the ``seed_run``
fixture, and the sweep tests share one two-job sweep.
"""

from __future__ import annotations

import math
import re
import subprocess
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml
from helpers import (
    FAST,
    get_json,
    hparams_session,
    in_parallel,
    read_events,
    read_metrics,
    run_cli,
    tensorboard_server,
    train_run,
)
from hydra.utils import instantiate
from omegaconf import OmegaConf

from posenc_exp.module import PosEncModule

pytestmark = pytest.mark.slow
EPOCHS = 3  # FAST's trainer.max_epochs
METRICS_KEYS = {"train_loss", "val_loss", "epochs", "encoding_initial", "encoding_final"}


def event_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.rglob("events.out.tfevents.*"))


def encoding_tags(run_dir: Path) -> dict[str, list[str]]:
    """The TensorBoard tags whose name contains ``encoding``, by kind."""
    tags = read_events(run_dir).Tags()
    return {kind: [t for t in tags[kind] if "encoding" in t] for kind in ("scalars", "histograms", "images")}


def checkpoint_epoch(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["epoch"]


# --- one default run: the run-directory contract ---------------------------------------------------------------


def test_run_directory_contract(seed_run: Path) -> None:
    assert (seed_run / ".hydra" / "config.yaml").is_file()
    assert (seed_run / ".hydra" / "overrides.yaml").is_file()
    assert event_files(seed_run)
    checkpoints = seed_run / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()
    best = sorted(checkpoints.glob("best*.ckpt"))
    assert len(best) == 1
    metrics = read_metrics(seed_run)
    assert metrics.keys() >= METRICS_KEYS
    assert metrics["epochs"] == EPOCHS
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_loss"])
    for key in ("encoding_initial", "encoding_final"):
        assert len(metrics[key]) == 10 and all(isinstance(v, float) for v in metrics[key])
    assert metrics["encoding_final"] != metrics["encoding_initial"]
    # last.ckpt is the last epoch; the best one is the epoch of the lowest logged val/loss.
    assert checkpoint_epoch(checkpoints / "last.ckpt") == EPOCHS - 1
    val_losses = [event.value for event in read_events(seed_run).Scalars("val/loss")]
    assert checkpoint_epoch(best[0]) == val_losses.index(min(val_losses))


def test_every_checkpoint_loads_weights_only_and_rebuilds_the_module(seed_run: Path) -> None:
    """Init args are primitives, so ``weights_only=True`` loads them and rebuilds the module; last.ckpt holds
    the final encoding."""
    paths = sorted((seed_run / "checkpoints").glob("*.ckpt"))
    assert len(paths) == 2
    modules = {}
    for path in paths:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        modules[path.name] = PosEncModule(**checkpoint["hyper_parameters"])
        modules[path.name].load_state_dict(checkpoint["state_dict"])
    final = torch.tensor(read_metrics(seed_run)["encoding_final"])
    assert torch.equal(modules["last.ckpt"].net.encoding.snapshot()[0].squeeze(-1), final)


def test_console_prints_the_encoding_table_and_final_losses(seed_run: Path) -> None:
    stdout = (seed_run.parent / "console.txt").read_text()
    stderr = (seed_run.parent / "console_err.txt").read_text()
    metrics = read_metrics(seed_run)
    rows = [line for line in stdout.splitlines() if re.match(r"^\s+\d+ \|", line)]
    assert len(rows) == 10
    for position, row in enumerate(rows):
        cells = [cell.strip() for cell in row.split("|")]
        assert int(cells[0]) == position
        assert float(cells[1]) == pytest.approx(metrics["encoding_initial"][position], abs=6e-5)
        assert float(cells[2]) == pytest.approx(metrics["encoding_final"][position], abs=6e-5)
    assert f"epochs={EPOCHS}" in stdout
    assert f"train_loss={metrics['train_loss']:.4f}" in stdout
    assert f"val_loss={metrics['val_loss']:.4f}" in stdout
    assert f"Epoch {EPOCHS - 1}" in stdout + stderr  # the progress bar


def test_snapshot_callback_logs_encoding_tags_once_per_epoch(seed_run: Path) -> None:
    """Histogram and scalar distance tags containing ``encoding``, one entry per epoch each; the images every
    ``image_every_n_epochs`` (10) epochs and at the last."""
    events = read_events(seed_run)
    tags = encoding_tags(seed_run)
    assert tags["scalars"] and tags["histograms"] and tags["images"]
    epochs = list(range(EPOCHS))
    for tag in tags["scalars"]:
        assert [e.step for e in events.Scalars(tag)] == epochs, tag
    for tag in tags["histograms"]:
        assert [e.step for e in events.Histograms(tag)] == epochs, tag
    for tag in tags["images"]:
        assert [e.step for e in events.Images(tag)] == [0, EPOCHS - 1], tag
    # The distance from the initial value, at the last epoch, is that of the final encoding in metrics.json.
    metrics = read_metrics(seed_run)
    expected = torch.tensor(metrics["encoding_final"]).sub(torch.tensor(metrics["encoding_initial"])).norm()
    assert events.Scalars("encoding/distance_from_init")[-1].value == pytest.approx(expected.item(), rel=1e-5)
    # The position x epoch heatmap gains a column every epoch, at one image size whatever the epoch count.
    history = events.Images("view/encoding/history")
    assert len({(e.width, e.height) for e in history}) == 1
    assert len({e.encoded_image_string for e in history}) == len(history)


def test_hparams_session_holds_the_group_choices_and_the_overrides(seed_run: Path) -> None:
    """The HParams tab's columns: each config group's choice and each overridden key, not ``_target_`` paths;
    its metric columns are the runs' scalar series (read back over HTTP in test_tensorboard.py)."""
    params = hparams_session(seed_run)
    assert {
        "data": "random",
        "model": "feedforward",
        "encoding": "learned",
        "optimizer": "adam",
    }.items() <= params.items()
    assert params["trainer.max_epochs"] == EPOCHS and params["seed"] == 0  # FAST's override, and the seed
    assert not any("_target_" in name for name in params)
    events = read_events(seed_run)
    assert "hp_metric" not in events.Tags()["scalars"]
    for tag in ("train/loss", "val/loss"):
        values = [e.value for e in events.Scalars(tag)]
        assert len(values) == EPOCHS and all(math.isfinite(v) for v in values), tag
    assert events.Scalars("val/loss")[-1].value == pytest.approx(read_metrics(seed_run)["val_loss"])


# --- resume, reproducibility -------------------------------------------------------------------------------------


def test_resume_from_last_checkpoint_continues_at_the_right_epoch(seed_run: Path, tmp_path: Path) -> None:
    """2 epochs, then resumed to 3 from last.ckpt: bit-identical to 3 straight epochs, logged at epoch 2."""
    first, resumed = tmp_path / "first", tmp_path / "resumed"
    train_run(first, "trainer.max_epochs=2")
    assert checkpoint_epoch(first / "checkpoints" / "last.ckpt") == 1
    train_run(resumed, f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}")
    straight, after = read_metrics(seed_run), read_metrics(resumed)
    assert after["epochs"] == EPOCHS
    assert after["optimizer_steps"] == straight["optimizer_steps"]
    assert after["encoding_initial"] == straight["encoding_initial"]
    assert after["encoding_final"] == straight["encoding_final"]
    events, straight_events = read_events(resumed), read_events(seed_run)
    assert [e.step for e in events.Scalars("train/loss")] == [2]  # the x-axis of every scalar is the epoch
    for tag in ("train/loss", "val/loss", "encoding/distance_from_init"):
        resumed_series = [(e.step, e.value) for e in events.Scalars(tag)]
        assert resumed_series == [(e.step, e.value) for e in straight_events.Scalars(tag)][2:], tag
    # The heatmap history is restored with the callback's state: three columns, as in the straight run.
    resumed_history = events.Images("view/encoding/history")[0].encoded_image_string
    assert resumed_history == straight_events.Images("view/encoding/history")[-1].encoded_image_string


def test_seeded_runs_are_reproducible(seed_run: Path, tmp_path: Path) -> None:
    """The same command twice: bit-identical final encodings (and losses); another seed: different ones."""
    again, other = tmp_path / "again", tmp_path / "other_seed"
    in_parallel(partial(train_run, again), partial(train_run, other, "seed=1"))
    assert read_metrics(again)["encoding_final"] == read_metrics(seed_run)["encoding_final"]
    assert read_metrics(again)["train_loss"] == read_metrics(seed_run)["train_loss"]
    assert read_metrics(other)["encoding_initial"] != read_metrics(seed_run)["encoding_initial"]
    assert read_metrics(other)["encoding_final"] != read_metrics(seed_run)["encoding_final"]


# --- bad input ---------------------------------------------------------------------------------------------------

BAD_INPUTS = [
    ("data.length=0", "data.length"),
    ("model.n_hidden=0", "model.n_hidden"),
    ("data.xlen=10", "data.xlen"),  # == data.length
    ("data.batch_size=0", "data.batch_size"),
    ("optimizer.lr=0", "optimizer.lr"),
    ("trainer.max_epochs=0", "trainer.max_epochs"),
    ("model=nope", "model"),
    ("model.n_hiden=8", "model.n_hiden"),  # a key that does not exist
    ("model.n_hidden=abc", "model.n_hidden"),  # a value of the wrong type
    *([] if torch.cuda.is_available() else [("trainer=ddp", "trainer.accelerator")]),  # a GPU trainer, no GPU
    ("ckpt_path={tmp}/missing.ckpt", "ckpt_path"),
    ("ckpt_path={tmp}/notes.txt", "ckpt_path"),
    ("data.context_size=8", "data.length"),  # a renamed key names its new name
    ("experiment=seed", "experiment=toy"),  # a renamed option too
    ("callbacks.attention_patterns.n_examples=0", "callbacks.attention_patterns.n_examples"),
    ("callbacks.encoding_snapshot.history_pixels=[8,300]", "callbacks.encoding_snapshot.history_pixels"),
]


def assert_nothing_written(run_dir: Path) -> None:
    assert not (run_dir / "checkpoints").exists()
    assert not event_files(run_dir)
    assert not (run_dir / "metrics.json").exists()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Each bad input's run directory and CLI result (started two at a time)."""
    tmp = tmp_path_factory.mktemp("bad_input")
    (tmp / "notes.txt").write_text("not a checkpoint\n")
    run_dirs = {override: tmp / f"run{i}" for i, (override, _) in enumerate(BAD_INPUTS)}
    runs = [partial(train_run, run_dirs[o], o.format(tmp=tmp), check=False) for o, _ in BAD_INPUTS]
    return dict(zip(run_dirs, zip(run_dirs.values(), in_parallel(*runs), strict=True), strict=True))


@pytest.mark.parametrize(("override", "key"), BAD_INPUTS, ids=[override for override, _ in BAD_INPUTS])
def test_bad_input_fails_with_one_error_line_naming_the_key(override: str, key: str, bad_runs) -> None:
    run_dir, result = bad_runs[override]
    assert result.returncode != 0
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr[-2000:]
    assert key in errors[0]
    assert "Traceback" not in result.stderr
    assert_nothing_written(run_dir)


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    """A learning rate of 1e12 with one optimizer step per epoch (the batch holds all samples): Adam moves
    every weight by about lr per step, so a few epochs later the forward pass overflows to inf - inf = NaN.
    (last.ckpt after every epoch here: by default every 10th, and a crash loses the epochs since.)"""
    run_dir = tmp_path / "run"
    every_epoch = "callbacks.last_checkpoint.every_n_epochs=1"
    result = train_run(
        run_dir, "optimizer.lr=1e12", "data.batch_size=1000", "trainer.max_epochs=50", every_epoch, check=False
    )
    assert result.returncode != 0
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and "non-finite" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (run_dir / "metrics.json").exists()
    # The last good checkpoint: a few epochs in, finite weights, and a finite validation loss when evaluated.
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] >= 1
    module = PosEncModule(**checkpoint["hyper_parameters"])
    module.load_state_dict(checkpoint["state_dict"])
    assert all(torch.isfinite(p).all() for p in module.parameters())
    datamodule = instantiate(OmegaConf.load(run_dir / ".hydra" / "config.yaml").data)
    datamodule.setup("fit")
    x_val, y_val = datamodule.splits["val"]  # (replica, sample, ...)
    with torch.no_grad():
        assert torch.isfinite(module.loss(module(x_val), y_val)).all()
    assert all(math.isfinite(e.value) for e in read_events(run_dir).Scalars("val/loss"))


# --- other entry points ------------------------------------------------------------------------------------------


def test_help_lists_the_config_groups_and_cfg_job_prints_the_composed_config(tmp_path: Path) -> None:
    help_result, cfg_result = in_parallel(
        partial(run_cli, "--help"),
        partial(run_cli, "--cfg", "job", "model.n_hidden=64", f"hydra.run.dir={tmp_path / 'run'}"),
    )
    groups = help_result.stdout.split("== Configuration groups ==")[1]
    for group in ("data", "model", "encoding", "trainer", "experiment"):
        assert re.search(rf"^{group}: ", groups, re.MULTILINE), group
    config = yaml.safe_load(cfg_result.stdout)
    assert config["model"]["n_hidden"] == 64
    assert config["model"]["length"] == "${data.length}"
    assert config["data"]["length"] == 10
    assert not (tmp_path / "run").exists()


def test_fast_dev_run_runs_without_a_tensorboard_logger(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = train_run(run_dir, "trainer.fast_dev_run=true")
    assert "Traceback" not in result.stderr and not error_lines(result.stderr)
    assert not event_files(run_dir)  # fast_dev_run swaps the logger for a dummy: nothing is logged


# --- sweeps and browsing -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_job_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``-m model.n_hidden=8,16`` with Hydra's basic (sequential) launcher."""
    sweep_dir = tmp_path_factory.mktemp("two_job_sweep") / "sweep"
    run_cli("-m", *FAST, "model.n_hidden=8,16", f"hydra.sweep.dir={sweep_dir}")
    return sweep_dir


def test_multirun_makes_one_run_directory_per_job(two_job_sweep: Path) -> None:
    jobs = sorted(p for p in two_job_sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    widths = []
    for job in jobs:
        assert (job / ".hydra").is_dir() and event_files(job) and (job / "checkpoints" / "last.ckpt").is_file()
        assert read_metrics(job)["epochs"] == EPOCHS
        widths.append(yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["model"]["n_hidden"])
    assert widths == [8, 16]


def test_joblib_launcher_runs_the_sweep(small_sweep: Path) -> None:
    """The shared joblib sweep (2 jobs at once): every job with a valid width trained; the n_hidden=0 jobs
    failed alone, writing nothing."""
    jobs = sorted((p for p in small_sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    assert len(jobs) == 12
    for job in jobs:
        n_hidden = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["model"]["n_hidden"]
        if n_hidden == 0:
            assert_nothing_written(job)
        else:
            assert read_metrics(job)["epochs"] == EPOCHS


def test_tensorboard_serves_the_runs_scalars_histograms_images_and_hparams(two_job_sweep: Path) -> None:
    """A real ``tensorboard --logdir <sweep>``: its HTTP data API serves each run's tags and the HParams tab
    lists both runs with their width and their real final losses."""
    log = two_job_sweep.parent / "tensorboard.log"
    with tensorboard_server(two_job_sweep, {"0", "1"}, log) as base:
        scalars = get_json(f"{base}/plugin/scalars/tags")
        histograms = get_json(f"{base}/plugin/histograms/tags")
        images = get_json(f"{base}/plugin/images/tags")
        for run in ("0", "1"):
            assert {"train/loss", "val/loss", "encoding/distance_from_init"} <= scalars[run].keys()
            assert any("encoding" in tag for tag in histograms[run])
            assert any("encoding" in tag for tag in images[run])
            served = get_json(f"{base}/plugin/scalars/scalars?run={run}&tag=val/loss")
            assert [step for _, step, _ in served] == list(range(EPOCHS))
            assert served[-1][2] == pytest.approx(read_metrics(two_job_sweep / run)["val_loss"])
        request = {
            "experimentName": "",
            "startIndex": 0,
            "sliceSize": 10,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
            "colParams": [{"metric": {"tag": "train/loss"}}, {"metric": {"tag": "val/loss"}}],
        }
        groups = get_json(f"{base}/plugin/hparams/session_groups", request)["sessionGroups"]
        widths = []
        for group in groups:
            widths.append(group["hparams"]["model.n_hidden"])
            values = {m["name"]["tag"]: m["value"] for m in group["sessions"][0]["metricValues"]}
            job = two_job_sweep / group["sessions"][0]["name"]
            assert values["val/loss"] == pytest.approx(read_metrics(job)["val_loss"])
            assert values["train/loss"] == pytest.approx(read_metrics(job)["train_loss"])
        assert sorted(widths) == [8, 16]
