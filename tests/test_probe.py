"""The linear-collapse probe: measured degrees against the algebra, the linear share, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import run_cli

from posenc_exp.analysis.probe import compose_probe, expand_sweeps, homogeneity, probe

ATTENTION_ONLY = ["model.softmax=false", "model.residual=false", "model.mlp=false", "model.norm=none"]
SMALL = ["length=4", "n_fit=1024", "n_test=256", "n_scale=16"]  # L d + 1 = 129 unknowns per output


def test_two_softmax_free_layers_without_residual_have_degree_nine() -> None:
    row = probe(compose_probe([*ATTENTION_ONLY, *SMALL, "model.depth=2"]))
    assert row["degree"] == pytest.approx(9.0, abs=1e-6)
    assert row["slope_low"] == pytest.approx(9.0, abs=1e-6) and row["slope_high"] == pytest.approx(9.0, abs=1e-6)
    assert row["theory"] == 9
    assert row["linear_r2"] < 0.2  # far from linear


@pytest.mark.parametrize("softmax", [False, True])
def test_position_only_attention_is_linear(softmax: bool) -> None:
    overrides = [*ATTENTION_ONLY, *SMALL, "model.depth=2", "model.position_only=true", f"model.softmax={softmax}"]
    row = probe(compose_probe(overrides))
    assert row["degree"] == pytest.approx(1.0, abs=1e-6)
    assert row["linear_r2"] == pytest.approx(1.0, abs=1e-6)


def test_homogeneity_recovers_the_degree_of_a_known_map() -> None:
    x, alphas = torch.randn(4, 3, 2, dtype=torch.float64), torch.logspace(-1, 1, 5, dtype=torch.float64)
    assert homogeneity(lambda t: t.pow(5), x, alphas)["degree"] == pytest.approx(5.0)
    mixed = homogeneity(lambda t: t + t.pow(3), x, alphas)  # not homogeneous: the slope grows with alpha
    assert mixed["slope_low"] < 1.2 and mixed["slope_high"] > 2.5


def test_comma_lists_expand_to_every_combination() -> None:
    assert expand_sweeps(["model.depth=1,2", "model.softmax=false", "seed=range(0,2)"]) == [
        ["model.depth=1", "model.softmax=false", "seed=0"],
        ["model.depth=1", "model.softmax=false", "seed=1"],
        ["model.depth=2", "model.softmax=false", "seed=0"],
        ["model.depth=2", "model.softmax=false", "seed=1"],
    ]


@pytest.mark.slow
def test_probe_cli_prints_a_table_and_a_json_last_line() -> None:
    result = run_cli(
        "model.softmax=false", "model.residual=false", "model.depth=1,2", module="posenc_exp.analysis.probe"
    )
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:2] == ["depth", "softmax"]
    rows = json.loads(lines[-1])["rows"]
    assert [(r["depth"], round(r["degree"], 3)) for r in rows] == [(1, 3.0), (2, 9.0)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "names"),
    [("model.depth=0", "model.depth=0"), ("model=feedforward", "model=attention"), ("alpha_min=-1", "alpha_min")],
)
def test_probe_cli_bad_input_is_one_error_line(override: str, names: str) -> None:
    result = run_cli(override, module="posenc_exp.analysis.probe", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: ")
    assert names in result.stderr and result.stdout == ""
