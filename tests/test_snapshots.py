"""The encoding-snapshot callback per family, read back from the event files of real CLI runs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FAST, read_events, read_metrics, run_cli
from hydra.utils import instantiate
from PIL import Image

from posenc_exp.config import compose_train
from posenc_exp.encodings import LearnedAbsolute
from posenc_exp.images import snapshot_images

pytestmark = pytest.mark.slow

SWEPT = ["sinusoidal", "rope", "alibi", "t5", "none", "learned"]  # job k of the sweep runs SWEPT[k]
ATTENTION = ["model=attention", "model.d_model=16", "model.n_heads=4", "model.depth=1"]


@pytest.fixture(scope="module")
def attention_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One real multirun of the attention model over the encodings, 3 epochs each: option -> run dir."""
    sweep_dir = tmp_path_factory.mktemp("snapshots")
    run_cli("-m", *FAST, *ATTENTION, f"encoding={','.join(SWEPT)}", f"hydra.sweep.dir={sweep_dir}")
    return {option: sweep_dir / str(job) for job, option in enumerate(SWEPT)}


def decoded(event) -> np.ndarray:
    """An image event as an ``(H, W, 3)`` uint8 array."""
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def encoding_tags(events, kind: str) -> set[str]:
    return {tag for tag in events.Tags()[kind] if tag.startswith(("encoding/", "view/encoding/"))}


def test_seed_vector_is_logged_every_epoch_with_its_history(seed_run: Path) -> None:
    events = read_events(seed_run)
    # A width-1 table: its table and cosine images would say nothing the history does not.
    assert encoding_tags(events, "images") == {"view/encoding/history"}
    assert encoding_tags(events, "histograms") == {"view/encoding/values"}
    # Images at epochs 0, 10, 20, ... (image_every_n_epochs) and at the last: here 0 and 2.
    assert [event.step for event in events.Images("view/encoding/history")] == [0, 2]
    distances = [event.value for event in events.Scalars("encoding/distance_from_init")]
    assert len(distances) == 3 and 0 < distances[0] < distances[-1]
    history = events.Images("view/encoding/history")
    assert len({(e.height, e.width) for e in history}) == 1, "one size whatever the number of epochs"
    assert history[-1].width > history[-1].height, "a landscape image, not a stretched column"


def test_learned_table_is_logged_every_epoch(attention_runs: dict[str, Path]) -> None:
    run = attention_runs["learned"]
    events = read_events(run)
    tags = {"view/encoding/table", "view/encoding/cosine_similarity", "view/encoding/history"}
    assert encoding_tags(events, "images") == tags
    for tag in tags:
        assert [event.step for event in events.Images(tag)] == [0, 2]
    # The last table image is the final table of metrics.json, rendered by the encoding itself.
    final_table = torch.tensor(read_metrics(run)["encoding_final"])
    final = LearnedAbsolute(max_positions=len(final_table), d_model=final_table.shape[1])
    final.table.data = final_table.unsqueeze(0)  # one replica
    expected = snapshot_images(final)["table"]
    np.testing.assert_array_equal(decoded(events.Images("view/encoding/table")[-1]), expected)


def test_t5_bias_is_logged_every_epoch_with_one_tile_per_head(attention_runs: dict[str, Path]) -> None:
    events = read_events(attention_runs["t5"])
    assert encoding_tags(events, "images") == {"view/encoding/bias", "view/encoding/history"}
    assert [event.step for event in events.Images("view/encoding/bias")] == [0, 2]
    bias = events.Images("view/encoding/bias")[-1]
    assert (bias.height, bias.width) == (10 * 8, 4 * 10 * 8 + 3 * 2)  # 4 heads of 10 x 10, 2-pixel gaps
    assert [event.value > 0 for event in events.Scalars("encoding/distance_from_init")] == [True] * 3


@pytest.mark.parametrize(
    ("option", "images", "histograms"),
    [
        ("sinusoidal", {"view/encoding/table", "view/encoding/cosine_similarity"}, {"view/encoding/values"}),
        ("rope", {"view/encoding/rotation"}, {"view/encoding/log10_frequency"}),
        ("alibi", {"view/encoding/bias"}, set()),
    ],
)
def test_fixed_encodings_are_logged_once(
    attention_runs: dict[str, Path], option: str, images: set[str], histograms: set[str]
) -> None:
    events = read_events(attention_runs[option])
    assert encoding_tags(events, "images") == images and encoding_tags(events, "histograms") == histograms
    for tag in images:
        assert [event.step for event in events.Images(tag)] == [0]
    assert "encoding/distance_from_init" not in events.Tags()["scalars"]


def test_alibi_image_is_the_slopes_bias_of_each_head(attention_runs: dict[str, Path]) -> None:
    image = decoded(read_events(attention_runs["alibi"]).Images("view/encoding/bias")[0])
    alibi = instantiate(compose_train([*ATTENTION, "encoding=alibi"]).encoding)
    np.testing.assert_array_equal(image, snapshot_images(alibi)["bias"])
    # Head 1 (slope 2^-2) at distance 9 is the most negative entry: full blue; head 4 (2^-8) nearly white.
    steepest_corner, shallowest_corner = image[-1, 0], image[-1, 3 * (80 + 2)]
    assert steepest_corner.tolist() == [33, 102, 172] and shallowest_corner[0] > 240
    assert (image[0, 0] == 247).all()  # distance 0: no bias, white


def test_nope_logs_no_encoding_snapshot(attention_runs: dict[str, Path]) -> None:
    events = read_events(attention_runs["none"])
    for kind in ("images", "histograms", "scalars"):
        assert encoding_tags(events, kind) == set()
    assert "val/loss" in events.Tags()["scalars"]
