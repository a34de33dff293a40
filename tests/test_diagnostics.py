"""The depth diagnostics: each measure against its definition, the callback's tags read back from real event
files, and nothing computed when the callback is off."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import read_events, train_run

from posenc_exp.config import compose_train
from posenc_exp.diagnostics import (
    MEASUREMENTS,
    attention_entropy,
    attention_parameter_count,
    composite_norm,
    gradient_norms,
    layer_of,
    position_probe_accuracy,
    rank_collapse_ratio,
)
from posenc_exp.encodings import ALiBi, LearnedAbsolute, NoPE, Sinusoidal, T5Bias, sinusoid_table
from posenc_exp.models import AttentionStack
from posenc_exp.rundir import DIAGNOSTICS_FILE

# A tiny reverse task with the diagnostics on: what the CLI tests train.
TINY_REVERSE = [
    "model=attention",
    "data=reverse",
    "encoding=learned",
    "model.causal=true",
    "model.d_model=8",
    "model.n_heads=2",
    "model.depth=2",
    "data.length=4",
    "data.min_length=4",
    "data.eval_factors=[1.0]",
    "data.n_train=64",
    "data.n_val=32",
    "data.batch_size=16",
]


def test_composite_norm_is_the_geometric_mean_of_the_largest_column_and_row_sums() -> None:
    x = torch.tensor([[1.0, -2.0], [3.0, 0.5]])  # column sums 4, 2.5; row sums 3, 3.5
    assert composite_norm(x).item() == pytest.approx(math.sqrt(4.0 * 3.5))


def test_rank_collapse_ratio_is_zero_for_equal_tokens_and_positive_otherwise() -> None:
    generator = torch.Generator().manual_seed(0)
    row = torch.randn(3, 1, 16, generator=generator)
    assert rank_collapse_ratio(row.expand(3, 10, 16)).item() == pytest.approx(0.0, abs=1e-7)
    assert rank_collapse_ratio(torch.randn(3, 10, 16, generator=generator)).item() > 0.5
    # One token differing from the rest is enough to leave full collapse.
    nearly = row.expand(3, 10, 16).clone()
    nearly[:, 0] += 1.0
    assert rank_collapse_ratio(nearly).item() > 0.01


@pytest.mark.parametrize("causal", [False, True])
def test_uniform_attention_has_entropy_log_n_and_one_after_normalisation(causal: bool) -> None:
    n, heads = 7, 3
    allowed = torch.ones(n, n).tril() if causal else torch.ones(n, n)
    uniform = (allowed / allowed.sum(dim=-1, keepdim=True)).expand(2, heads, n, n)
    torch.testing.assert_close(attention_entropy(uniform, causal), torch.ones(heads, dtype=uniform.dtype))
    raw = attention_entropy(uniform, causal, normalised=False)
    # Row i attends n_i keys (n, or i + 1 when causal) and has entropy log n_i; the first causal row is left out.
    expected = math.log(n) if not causal else sum(math.log(i + 1) for i in range(1, n)) / (n - 1)
    torch.testing.assert_close(raw, torch.full((heads,), expected))


def test_attention_on_one_key_has_entropy_zero() -> None:
    one_hot = torch.eye(5)[torch.tensor([4, 0, 2, 2, 1])].expand(1, 2, 5, 5)
    torch.testing.assert_close(attention_entropy(one_hot, causal=False), torch.zeros(2))


def test_position_probe_reads_positions_that_are_there_and_not_others() -> None:
    generator = torch.Generator().manual_seed(0)
    content = torch.randn(64, 8, 16, generator=generator)
    with_positions = content * 0.1 + sinusoid_table(8, 16)
    assert position_probe_accuracy(with_positions) > 0.95
    assert position_probe_accuracy(content) < 0.3  # chance is 1/8


def test_gradient_norms_group_parameters_by_layer() -> None:
    assert [layer_of(n) for n in ("embed.weight", "blocks.0.mlp.0.bias", "blocks.11.norms.1.weight")] == [
        "layer0",
        "layer1",
        "layer12",
    ]
    norms = gradient_norms(
        {
            "blocks.0.qkv.weight": torch.full((2, 2), 1.0),
            "blocks.0.out.bias": torch.tensor([1.0]),
            "readout.w": 3 * torch.ones(1),
        }
    )
    assert norms == pytest.approx({"layer1": math.sqrt(5.0), "readout": 3.0})


@pytest.mark.parametrize("mlp", [False, True])
@pytest.mark.parametrize("norm", ["pre", "post", "none"])
@pytest.mark.parametrize(
    ("vocab_size", "encoding"),
    [(None, NoPE()), (12, LearnedAbsolute(20, 16)), (12, Sinusoidal(16, 20)), (None, T5Bias(4)), (12, ALiBi(4))],
)
def test_parameter_count_formula_equals_the_counted_parameters(mlp, norm, vocab_size, encoding) -> None:
    for depth in (1, 3):
        net = AttentionStack(16, 4, depth, encoding, vocab_size=vocab_size, mlp=mlp, norm=norm, mlp_ratio=2)
        encoding_parameters = sum(p.numel() for p in encoding.parameters())
        formula = attention_parameter_count(16, depth, mlp, 2, norm, vocab_size, encoding_parameters)
        assert formula == sum(p.numel() for p in net.parameters())


@pytest.mark.slow
def test_diagnostics_callback_writes_its_tags_to_the_event_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train_run(run_dir, *TINY_REVERSE, "callbacks=diagnostics", "trainer.max_epochs=2")
    events = read_events(run_dir)
    tags = set(events.Tags()["scalars"])
    expected = {"diag/parameters", "diag/train_loss", "diag/val_loss", "diag/generalization_gap"}
    for layer in (0, 1, 2):
        expected |= {f"diag/layer{layer}/{m}" for m in ("rank_collapse", "position_probe", "grad_norm")}
    for layer in (1, 2):
        expected |= {f"diag/layer{layer}/attention_entropy", f"diag/layer{layer}/attention_entropy/head1"}
    expected |= {"diag/readout/grad_norm"}
    assert expected <= tags, expected - tags
    assert [e.step for e in events.Scalars("diag/layer2/rank_collapse")] == [0, 1, 2]  # init, 2 epochs
    for tag in expected - {"diag/parameters"}:
        assert all(math.isfinite(e.value) for e in events.Scalars(tag)), tag
    entropy = events.Scalars("diag/layer1/attention_entropy")[-1].value
    assert 0.0 <= entropy <= 1.0
    gap = events.Scalars("diag/generalization_gap")[-1].value
    losses = events.Scalars("diag/val_loss")[-1].value - events.Scalars("diag/train_loss")[-1].value
    assert gap == pytest.approx(losses)
    # The logged parameter count is the formula's: d=8, depth 2, MLP ratio 4, pre-norm, vocab 10, and a learned
    # table of 8 positions (2 x length 4) x 8.
    formula = attention_parameter_count(8, 2, True, 4, "pre", 10, encoding_parameters=8 * 8)
    assert events.Scalars("diag/parameters")[0].value == formula
    history = json.loads((run_dir / DIAGNOSTICS_FILE).read_text())
    assert [e["epoch"] for e in history["epochs"]] == [0, 1, 2]
    assert history["epochs"][-1]["diag/layer1/rank_collapse"] == pytest.approx(
        events.Scalars("diag/layer1/rank_collapse")[-1].value
    )


def fit_counting(tmp_path: Path, overrides: list[str]) -> tuple[int, int]:
    """Train in this process and count (forwards asking for internals, Diagnostics measurements)."""
    from posenc_exp.train import build

    cfg = compose_train([*TINY_REVERSE, "trainer.max_epochs=2", "callbacks.progress_bar=null", *overrides])
    cfg.paths.output_dir = str(tmp_path)
    datamodule, module, trainer = build(cfg)
    internals = []
    module.net.register_forward_pre_hook(
        lambda _, args, kwargs: internals.append(kwargs.get("return_internals", False)), with_kwargs=True
    )
    before = MEASUREMENTS["count"]
    trainer.fit(module, datamodule=datamodule)
    return sum(internals), MEASUREMENTS["count"] - before


@pytest.mark.slow
def test_with_diagnostics_off_nothing_is_computed(tmp_path: Path) -> None:
    no_patterns = "callbacks.attention_patterns=null"  # counted on its own below
    assert fit_counting(tmp_path / "default", [no_patterns]) == (0, 0)  # off by default
    dropped = ["callbacks=diagnostics", "callbacks.diagnostics=null", no_patterns]
    assert fit_counting(tmp_path / "dropped", dropped) == (0, 0)
    on = fit_counting(tmp_path / "on", ["callbacks=diagnostics", no_patterns])
    assert on == (3, 3)  # one forward with internals per measurement: at the start and after each epoch
    # The attention-pattern images (on by default): after each of the 2 epochs one forward with internals per
    # length, the training length and the longest evaluation length, here the same one (eval_factors=[1.0]).
    assert fit_counting(tmp_path / "patterns", []) == (2, 0)
