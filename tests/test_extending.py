"""The extension guide builds and trains: docs/extending.md's code blocks tagged with a file name are written
out as they stand and trained through the real CLI, so the guide cannot go stale."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest
from helpers import FAST, REPO, read_events, read_metrics, run_cli

from posenc_exp.config import check_group_choices
from posenc_exp.errors import ConfigError

GUIDE = REPO / "docs" / "extending.md"
EXAMPLE = REPO / "examples" / "extending"
# A fenced block whose info string names its file: ```python title="my_posenc/kerple.py"
FILE_BLOCK = re.compile(r'^```\w+ title="([^"]+)"\n(.*?)^```$', re.MULTILINE | re.DOTALL)
OPTIONS = {
    "encoding": "kerple_softplus",
    "data": "first",
    "model": "pooling",
    "callbacks": "attention_distance",
}


def guide_files() -> dict[str, str]:
    """File name -> contents of every block of the guide tagged with a file name."""
    files: dict[str, str] = {}
    for name, body in FILE_BLOCK.findall(GUIDE.read_text()):
        assert name not in files, f"{name} appears twice in {GUIDE.name}"
        files[name] = body
    return files


def build_guide(folder: Path) -> Path:
    """Write the guide's files under ``folder``; return it."""
    for name, body in guide_files().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(body)
    return folder


def test_the_guide_holds_one_python_file_and_one_yaml_option_per_kind() -> None:
    files = guide_files()
    assert {f"conf/{group}/{option}.yaml" for group, option in OPTIONS.items()} <= set(files)
    python = {name for name in files if name.endswith(".py")}
    assert len(python) == len(OPTIONS), python
    for group, option in OPTIONS.items():
        target = re.search(r"^\s*_target_: ([\w.]+)$", files[f"conf/{group}/{option}.yaml"], re.MULTILINE)
        assert target, f"conf/{group}/{option}.yaml has no _target_"
        module, _, cls = target[1].rpartition(".")
        assert f"class {cls}(" in files[module.replace(".", "/") + ".py"], target[1]


def test_examples_folder_holds_exactly_the_guide_files() -> None:
    on_disk = {
        str(path.relative_to(EXAMPLE)): path.read_text()
        for path in EXAMPLE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert on_disk == guide_files()


def test_options_on_the_search_path_pass_the_preflight_check(tmp_path: Path) -> None:
    build_guide(tmp_path)
    search_path = f"hydra.searchpath=[file://{tmp_path}/conf]"
    check_group_choices([search_path, *(f"{group}={option}" for group, option in OPTIONS.items())])
    with pytest.raises(ConfigError, match="encoding=kerple_softplus is not an option of 'encoding': allowed alibi"):
        check_group_choices(["encoding=kerple_softplus"])  # without the search path it is unknown, in one line
    with pytest.raises(ConfigError, match=r"allowed alibi, .*kerple, kerple_softplus, learned"):
        check_group_choices([search_path, "encoding=kerple_sofplus"])


def guide_cli(folder: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str, multirun: bool = False):
    """``python -m posenc_exp.train`` with the guide's folder on PYTHONPATH and its conf/ on Hydra's search path."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    return run_cli(*(["-m"] if multirun else []), *FAST, f"hydra.searchpath=[file://{folder}/conf]", *overrides)


@pytest.mark.slow
def test_guide_encoding_and_diagnostic_train_on_a_builtin_model_and_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = build_guide(tmp_path / "guide")
    run = tmp_path / "run"
    guide_cli(
        folder,
        monkeypatch,
        "model=attention",
        "model.causal=true",
        "data=copy",
        "data.n_train=512",
        "data.n_val=64",
        "encoding=kerple_softplus",
        "callbacks=attention_distance",
        f"hydra.run.dir={run}",
    )
    metrics = read_metrics(run)
    heads = 4  # conf/model/attention.yaml
    assert [len(row) for row in metrics["encoding_initial"]] == [2] * heads  # (r1, r2) per head
    assert all(math.isclose(v, 1.0, rel_tol=1e-6) for row in metrics["encoding_initial"] for v in row)
    assert metrics["encoding_final"] != metrics["encoding_initial"]  # trained
    assert set(metrics["eval"]) == {"8", "10", "12", "16"}  # a bias serves lengths past training
    assert all(math.isfinite(values["loss"]) for values in metrics["eval"].values())

    events = read_events(run)
    assert "view/encoding/bias" in events.Tags()["images"]  # BiasEncoding's image, for free
    assert events.Scalars("encoding/distance_from_init")[-1].value > 0
    longest = 2 * 8 - 1  # copy at length 8: 16 tokens, distances up to 15
    for layer in (1, 2):  # conf/model/attention.yaml: depth 2
        logged = events.Scalars(f"diag/layer{layer}/attention_distance")
        assert [e.step for e in logged] == [0, 1, 2]  # FAST: 3 epochs
        assert all(0 < e.value < longest for e in logged)


@pytest.mark.slow
def test_guide_task_and_model_need_the_encoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guide's claim: order-blind without an encoding (loss near 1 - 1/16, the window mean's), near 0
    with a learned one."""
    folder = build_guide(tmp_path / "guide")
    sweep = tmp_path / "sweep"
    overrides = ["data=first", "model=pooling", "encoding=none,learned", f"hydra.sweep.dir={sweep}"]
    guide_cli(folder, monkeypatch, *overrides, multirun=True)
    without, learned = read_metrics(sweep / "0"), read_metrics(sweep / "1")
    assert "encoding=none" in without["overrides"]
    assert "encoding=learned" in learned["overrides"]
    assert without["val_loss_floor"] == learned["val_loss_floor"] == 0.0
    assert set(learned["eval"]) == {"16", "20", "24", "32"}
    assert without["val_loss"] > 0.8
    assert learned["val_loss"] < 0.1
