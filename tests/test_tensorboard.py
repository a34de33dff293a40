"""What TensorBoard shows (issue 13): labelled images, attention patterns, the HParams columns, the Custom
Scalars layout and the console's last lines, read back from real CLI runs and over the HTTP API of a real
``tensorboard`` server on 127.0.0.1 (the same data the browser's tabs request)."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FAST, get_json, read_events, read_metrics, tensorboard_server, train_run
from hydra.utils import instantiate
from PIL import Image

from posenc_exp.callbacks import AttentionPatterns
from posenc_exp.config import compose_train
from posenc_exp.images import labelled_heatmaps, ticks
from posenc_exp.module import PosEncModule

# A small causal attention model on the copy task (evaluated at 4 lengths): val/acc, and attention images at
# the training length and the longest evaluation length.
ATTENTION = ["model=attention", "model.d_model=16", "model.n_heads=2", "model.depth=2", "model.causal=true"]
COPY = [*ATTENTION, "data=copy", "encoding=alibi"]

# --- the renderer: fast -------------------------------------------------------------------------------------------


def test_ticks_are_round_and_include_the_last_index() -> None:
    assert ticks(3) == [0, 1, 2]
    assert ticks(100) == [0, 20, 40, 60, 80, 99]
    assert ticks(1000) == [0, 200, 400, 600, 800, 999]
    assert ticks(64) == [0, 20, 40, 63]


def test_labelled_heatmap_has_one_size_whatever_the_number_of_epochs() -> None:
    """A 3-epoch and a 1000-epoch history of 10 positions: the same landscape image, not a stretched column."""
    rng = np.random.default_rng(0)
    short, long = (labelled_heatmaps([rng.normal(size=(10, n))], "position", "epoch") for n in (3, 1000))
    assert short.shape == long.shape and short.dtype == np.uint8
    assert short.shape[1] > short.shape[0]


def test_labelled_heatmap_colours_each_cell_by_its_sign() -> None:
    """Row 0 positive (red), row 1 negative (blue): the middle of each row's band has that colour."""
    image = labelled_heatmaps([np.array([[1.0, 1.0], [-1.0, -1.0]])], "position", "epoch", size=(100, 100))
    red, blue = np.array([178, 24, 43]), np.array([33, 102, 172])
    pixels = image.reshape(-1, 3)
    assert (pixels == red).all(axis=1).sum() >= 2 * 50 * 50 * 0.9  # the row-0 band, and the top of the colour bar
    assert (pixels == blue).all(axis=1).sum() >= 2 * 50 * 50 * 0.9
    rows_with_red = np.nonzero((image == red).all(axis=2).any(axis=1))[0]
    rows_with_blue = np.nonzero((image == blue).all(axis=2).any(axis=1))[0]
    assert rows_with_red.min() < rows_with_blue.min(), "position 0 is the top row"


# --- real runs: slow ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, subprocess.CompletedProcess]]]:
    """One logdir with a feed-forward run (the default task) and an attention run on the copy task, 3 epochs
    each, run two at a time; their console output by name."""
    root = tmp_path_factory.mktemp("tensorboard")
    runs = {"feedforward": [], "attention": COPY}
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(runs, pool.map(lambda item: train_run(root / item[0], *item[1]), runs.items()), strict=True))
    yield root, results


@pytest.mark.slow
def test_a_run_ends_with_its_directory_and_the_tensorboard_command(logdir) -> None:
    root, results = logdir
    for name, result in results.items():
        last = result.stdout.rstrip().splitlines()[-2:]
        assert last[0].startswith(f"run directory: {root / name}"), last
        assert last[1].split(":", 1)[1].strip() == f"tensorboard --logdir {root / name}", last
        for noise in ("GPU available", "TPU available", "litlogger", "LeafSpec", "srun"):
            assert noise not in result.stdout + result.stderr, noise


@pytest.mark.slow
def test_attention_images_are_the_mean_attention_of_the_fixed_batch(logdir) -> None:
    """One image per layer at the training length and the longest evaluation length, every epoch; the last
    is what the final weights (last.ckpt) attend to, recomputed here from the checkpoint."""
    root, _ = logdir
    events = read_events(root / "attention")
    cfg = compose_train([*FAST, *COPY])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    train_length, longest = datamodule.train_length, datamodule.eval_lengths[-1]
    expected_tags = {f"view/attention/layer{i}@len={n}" for i in (1, 2) for n in (train_length, longest)}
    assert {t for t in events.Tags()["images"] if t.startswith("view/attention/")} == expected_tags
    checkpoint = torch.load(root / "attention" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    module = PosEncModule(**checkpoint["hyper_parameters"])
    module.load_state_dict(checkpoint["state_dict"])
    callback = instantiate(cfg.callbacks.attention_patterns)
    assert isinstance(callback, AttentionPatterns)
    images = callback.images(module.net, datamodule.splits, [train_length, longest])
    for tag in expected_tags:
        logged = events.Images(tag)
        assert [e.step for e in logged] == [0, 1, 2], tag
        decoded = np.asarray(Image.open(io.BytesIO(logged[-1].encoded_image_string)).convert("RGB"))
        np.testing.assert_array_equal(decoded, images[tag], err_msg=tag)
    # causal attention: query 0 sees only key 0, so its row of the mean attention is (1, 0, 0, ...)
    patterns = callback.patterns(module.net, datamodule.splits, [longest])
    assert patterns[f"layer1@len={longest}"][0][0, 0] == pytest.approx(1.0)
    assert not [t for t in read_events(root / "feedforward").Tags()["images"] if t.startswith("view/attention/")]


@pytest.fixture(scope="module")
def server(logdir) -> Iterator[str]:
    """A real ``tensorboard --logdir`` over the two runs; the base URL of its data API."""
    root, _ = logdir
    with tensorboard_server(root, {"feedforward", "attention"}, root.parent / "tensorboard.log") as base:
        yield base


@pytest.mark.slow
def test_hparams_tab_columns_are_the_group_choices_and_every_runs_metrics(logdir, server: str) -> None:
    """The columns: group choices and overrides (those that differ first), never ``_target_`` paths; the
    metric columns are the union of the runs' scalars, so the attention run keeps ``val/acc`` next to the
    feed-forward run, and its value there is the run's final validation accuracy."""
    root, _ = logdir
    experiment = get_json(f"{server}/plugin/hparams/experiment", {"experimentName": ""})
    hparams = [info["name"] for info in experiment["hparamInfos"]]
    assert not any("_target_" in name for name in hparams)
    assert {"data", "model", "encoding", "optimizer", "seed", "model.d_model"} <= set(hparams)
    differing = [info["name"] for info in experiment["hparamInfos"] if info.get("differs")]
    assert {"data", "model", "encoding"} <= set(differing)
    assert hparams[: len(differing)] == differing, "the columns that differ come first"
    metrics = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert {"train/loss", "val/loss", "val/acc", "val/loss_gap"} <= metrics
    request = {
        "experimentName": "",
        "startIndex": 0,
        "sliceSize": 10,
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [{"metric": {"tag": tag}} for tag in sorted(metrics)],
    }
    groups = get_json(f"{server}/plugin/hparams/session_groups", request)["sessionGroups"]
    by_run = {g["sessions"][0]["name"]: g for g in groups}
    assert set(by_run) == {"feedforward", "attention"}
    assert by_run["attention"]["hparams"]["model"] == "attention"
    assert by_run["feedforward"]["hparams"]["model"] == "feedforward"
    values = {m["name"]["tag"]: m["value"] for m in by_run["attention"]["sessions"][0]["metricValues"]}
    metrics_json = read_metrics(root / "attention")
    assert values["val/acc"] == pytest.approx(metrics_json["eval"][str(metrics_json["train_length"])]["acc"])
    assert values["val/loss"] == pytest.approx(metrics_json["val_loss"])


@pytest.mark.slow
def test_custom_scalars_tab_opens_on_the_losses(server: str) -> None:
    layout = get_json(f"{server}/plugin/custom_scalars/layout")
    titles = [category["title"] for category in layout["category"]]
    assert titles[0] == "losses"
    first_chart = layout["category"][0]["chart"][0]
    assert first_chart["multiline"]["tag"] == ["^train/loss$", "^val/loss$"]
    charts = {chart["title"] for category in layout["category"] for chart in category["chart"]}
    assert {"val/acc", "val/acc@len", "val/loss_gap", "encoding/distance_from_init"} <= charts


@pytest.mark.slow
def test_tensorboard_serves_the_attention_images_and_the_history(server: str) -> None:
    images = get_json(f"{server}/plugin/images/tags")
    assert any(tag.startswith("view/attention/layer2@len=") for tag in images["attention"])
    assert "view/encoding/history" in images["feedforward"]
    served = get_json(f"{server}/plugin/images/images?run=feedforward&tag=view/encoding/history")
    assert [entry["step"] for entry in served] == [0, 2]  # every 10 epochs (image_every_n_epochs) and the last
