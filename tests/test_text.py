"""data=text: the split by path hash, the corpus fingerprint, a real CLI run on a corpus written here, and the
one-line errors for corpora that cannot serve."""

from __future__ import annotations

import math
import platform
import random
from pathlib import Path

import pytest
from helpers import hparams_session, read_events, read_metrics, run_cli, train_run
from hydra.utils import instantiate

from posenc_exp.config import ConfigError, compose_train, validate
from posenc_exp.data.text import TextBytes, corpus_files, split_files

LM = ["data=text", "model=attention", "model.causal=true"]
# A tiny model and corpus: 2 epochs of a few steps, windows of 16 bytes, evaluated at 16 and 32.
TINY = [
    *LM,
    "model.d_model=16",
    "model.n_heads=2",
    "model.depth=1",
    "data.length=16",
    "data.eval_factors=[1.0,2.0]",
    "data.val_fraction=0.3",
    "data.batch_size=16",
    "data.chunk_steps=8",
    "trainer.max_epochs=2",
]


def write_corpus(directory: Path, n_files: int = 24, lines: int = 40) -> Path:
    """``n_files`` small Python-like files, seeded: real bytes on disk, not a mock."""
    rng = random.Random(0)
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        body = "".join(
            f"def f{i}_{j}(x):\n    return x * {rng.randint(0, 99)} + ({rng.randint(0, 9)} - x)\n" for j in range(lines)
        )
        (directory / f"module_{i:02d}.py").write_text(f'"""Module {i}."""\n' + body)
    return directory


def text_task(*overrides: str) -> TextBytes:
    """The real datamodule of ``data=text`` with ``overrides``, set up."""
    task = instantiate(compose_train([*LM, *overrides]).data)
    task.setup("fit")
    return task


def test_the_split_of_the_stdlib_is_by_path_hash_deterministic_and_leak_free() -> None:
    root, files = corpus_files(None)
    assert len(files) > 500 and all(f.suffix == ".py" and "site-packages" not in f.parts for f in files)
    split = split_files(root, files, 0.1)
    train, val = set(split["train"]), set(split["val"])
    assert not train & val, "a file in both splits"
    assert train | val == set(files)
    assert 0.07 < len(val) / len(files) < 0.13  # the hash spreads files evenly
    shuffled = random.Random(1).sample(files, len(files))
    assert split_files(root, shuffled, 0.1) == split  # listing order does not matter
    # A file added to the corpus moves no other file between the splits.
    extra = split_files(root, [*files, root / "zz_new_module.py"], 0.1)
    assert set(extra["val"]) - {root / "zz_new_module.py"} == val


def test_the_stdlib_corpus_reads_within_its_bounds_and_reports_its_fingerprint() -> None:
    task = text_task("data.max_bytes=50000", "data.val_bytes=4096")
    corpus = task.provenance()["corpus"]
    assert corpus["python"] == platform.python_version() and corpus["source"] == "python stdlib"
    assert corpus["train_bytes"] == 50000 and corpus["val_bytes"] == 4096
    x, y = task.splits["train"]
    assert x.shape == (49999 // 64, 64) and (x[:, 1:] == y[:, :-1]).all()  # next-byte targets
    assert (x[1:, 0] == y[:-1, -1]).all()  # contiguous windows
    longest_x, _ = task.splits["val@256"]
    assert longest_x.shape == (4095 // 256, 256)


def test_the_fingerprint_changes_when_the_corpus_does(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    fingerprint = lambda: text_task(f"data.corpus={corpus}", "data.val_fraction=0.3").fingerprint["sha256"]  # noqa: E731
    first = fingerprint()
    assert fingerprint() == first
    file = next(iter(sorted(corpus.iterdir())))
    file.write_text(file.read_text().replace("return", "return  "))
    edited = fingerprint()
    assert edited != first
    (corpus / "zz_added.py").write_text("x = 1\n")
    assert fingerprint() != edited


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data=text", "model=attention"], "model.causal"),
        ([*LM, "data.vocab_size=100"], "data.vocab_size"),
        ([*LM, "data.max_bytes=0"], "data.max_bytes"),
        ([*LM, "data.val_fraction=1.0"], "data.val_fraction"),
    ],
)
def test_text_needs_a_causal_byte_model(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as error:
        validate(compose_train(overrides, return_hydra_config=True))
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_a_tiny_corpus_trains_through_the_cli_with_lm_metrics(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    run_dir = tmp_path / "run"
    train_run(run_dir, *TINY, f"data.corpus={corpus}")
    metrics = read_metrics(run_dir)
    assert metrics["train_length"] == 16 and set(metrics["eval"]) == {"16", "32"}
    for values in metrics["eval"].values():
        assert values["bpb"] == pytest.approx(values["loss"] / math.log(2), rel=1e-5)
        assert values["ppl"] == pytest.approx(math.exp(values["loss"]), rel=1e-5)
        assert values["bpb"] < 8  # learnt something: below a uniform guess over 256 bytes
    assert metrics["val_loss"] == metrics["eval"]["16"]["loss"]
    assert metrics["corpus"]["source"] == str(corpus) and metrics["corpus"]["files"] == 24
    curve = metrics["position_loss"]
    assert curve["length"] == 32 and len(curve["loss"]) == 32
    mean = sum(curve["loss"]) / 32
    assert mean == pytest.approx(metrics["eval"]["32"]["loss"], rel=1e-4)  # equal windows: the mean of the curve
    events = read_events(run_dir)
    assert {"val/bpb@len=32", "val/ppl@len=16", "val/loss"} <= set(events.Tags()["scalars"])
    assert "view/ppl_by_position" in events.Tags()["images"]
    assert len(events.Images("view/ppl_by_position")) == 2  # one per epoch, sanity check excluded
    params = hparams_session(run_dir)
    assert (
        params["corpus/sha256"] == metrics["corpus"]["sha256"] and params["corpus/python"] == platform.python_version()
    )
    report = run_cli(str(run_dir), module="posenc_exp.analysis.report")
    assert "ppl by evaluation length" in report.stdout
    assert (run_dir / "plots" / "ppl_by_position.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.parametrize(
    ("corpus", "expected"),
    [
        ("missing_dir", "matches no file"),
        ("", "matches no file"),  # not the working directory
        ("corpus/*.txt", "matches no file"),
        ("corpus/module_00.py", "falls in the"),  # one file cannot be split by file
        ("tiny", "fewer than one window"),
    ],
)
def test_a_corpus_that_cannot_serve_is_one_line_naming_the_key(tmp_path: Path, corpus: str, expected: str) -> None:
    write_corpus(tmp_path / "corpus")
    write_corpus(tmp_path / "tiny", lines=0)  # 24 files of 18 bytes: no window of 256 + 1 bytes in either split
    run_dir = tmp_path / "run"
    length = ["data.length=256"] if corpus == "tiny" else []
    value = str(tmp_path / corpus) if corpus else ""
    result = train_run(run_dir, *TINY, f"data.corpus={value}", *length, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: data.corpus={value}"), result.stderr
    assert expected in lines[0]
    assert not (run_dir / "metrics.json").exists()
