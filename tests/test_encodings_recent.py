"""Explicit positions, and the encodings of posenc_exp.recent_encodings and RoPE's scaling, each against its
paper's formula written out here (loops over positions, independent of the vectorised code)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import attention_three_ways, read_metrics, run_cli
from hydra.utils import instantiate

from posenc_exp.config import check_components, compose_train
from posenc_exp.encodings import ALiBi, LearnedAbsolute, RoPE, Sinusoidal, T5Bias, rope_frequencies
from posenc_exp.errors import ConfigError, LengthError
from posenc_exp.models.layers import stack_replicas
from posenc_exp.recent_encodings import FIRE, KERPLE, CoPE, Randomized, XPos

torch.set_default_dtype(torch.float32)


def rotate_pairs_by_hand(x: torch.Tensor, angle: list[float], scale: list[float]) -> torch.Tensor:
    """One vector ``x`` (d,) with pair ``i`` rotated by ``angle[i]`` and scaled by ``scale[i]``."""
    out = x.clone()
    for i in range(len(x) // 2):
        c, s = math.cos(angle[i]) * scale[i], math.sin(angle[i]) * scale[i]
        out[2 * i] = x[2 * i] * c - x[2 * i + 1] * s
        out[2 * i + 1] = x[2 * i] * s + x[2 * i + 1] * c
    return out


# ---- explicit positions: the ordinary ones reproduce every family exactly, others follow the formulas ----


def test_explicit_ordinary_positions_give_exactly_the_implicit_results() -> None:
    torch.manual_seed(0)
    n = 7
    ordinary = torch.arange(n)[None]
    x = torch.randn(1, 2, n, 8)
    for table in (LearnedAbsolute(16, 8), Sinusoidal(8, 16), Sinusoidal(8, 16, learnable=True)):
        assert torch.equal(table(x, ordinary), table(x))
    q, k = torch.randn(2, 1, 3, 2, n, 8).unbind(0)
    rope = RoPE(16, 2)  # head width 8
    for explicit, implicit in zip(rope.rotate(q, k, ordinary), rope.rotate(q, k), strict=True):
        torch.testing.assert_close(explicit, implicit, rtol=0, atol=1e-6)
    for bias in (ALiBi(4, causal=True), ALiBi(4), T5Bias(4), T5Bias(4, causal=True), KERPLE(4), FIRE(4)):
        torch.testing.assert_close(bias.attention_bias(n, n, ordinary, ordinary), bias.attention_bias(n, n))


def test_explicit_positions_follow_each_family_formula() -> None:
    torch.manual_seed(0)
    positions = torch.tensor([[0, 3, 4, 9, 20]])
    table = LearnedAbsolute(32, 4)
    x = torch.zeros(1, 1, 5, 4)
    torch.testing.assert_close(table(x, positions)[0, 0], table.table[0, positions[0]])
    # The fixed sinusoid at any position, float ones included: sin(p / 10000^(2i/d)), cos(...).
    float_positions = torch.tensor([[0.5, 2.25, 7.0]])
    rows = Sinusoidal(4, 8)(torch.zeros(1, 1, 3, 4), float_positions)[0, 0]
    for r, p in enumerate(float_positions[0].tolist()):
        expected = [math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)]
        torch.testing.assert_close(rows[r], torch.tensor(expected))
    # RoPE at explicit positions: R_p q . R_p' k depends on p - p' only.
    rope = RoPE(8, 1)
    q, k = torch.randn(2, 1, 1, 1, 5, 8).unbind(0)
    rq, rk = rope.rotate(q, k, positions)
    shifted_q, shifted_k = rope.rotate(q, k, positions + 100)
    torch.testing.assert_close(rq @ rk.transpose(-1, -2), shifted_q @ shifted_k.transpose(-1, -2), atol=1e-4, rtol=0)
    angle = [3 * 10000 ** (-2 * i / 8) for i in range(4)]
    torch.testing.assert_close(rq[0, 0, 0, 1], rotate_pairs_by_hand(q[0, 0, 0, 1], angle, [1.0] * 4))
    # ALiBi: -m_h (p_i - p_j) for keys at or before the query.
    bias = ALiBi(2, causal=True).attention_bias(5, 5, positions, positions)[0]
    for i in range(5):
        for j in range(i + 1):
            expected = -(2.0**-4) * (positions[0, i] - positions[0, j]).item()
            assert bias[0, i, j].item() == pytest.approx(expected)


# ---- KERPLE (Chi et al. 2022) ----


def test_kerple_is_minus_r1_log_one_plus_r2_distance_per_head() -> None:
    torch.manual_seed(0)
    kerple = KERPLE(3, causal=True)
    r1, r2 = kerple.r1.detach()[0], kerple.r2.detach()[0]
    assert r1.min() >= 0 and r1.max() <= 2 and r2.min() >= 0 and r2.max() <= 1  # the reference's U(0,2), U(0,1)
    bias = kerple.attention_bias(6, 6)[0]
    for h in range(3):
        for i in range(6):
            for j in range(i + 1):
                expected = -max(r1[h].item(), 0.01) * math.log(1 + max(r2[h].item(), 0.01) * (i - j))
                assert bias[h, i, j].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    symmetric = KERPLE(3).attention_bias(6, 6)[0]
    torch.testing.assert_close(symmetric, symmetric.transpose(-1, -2))
    # Gradients reach r1 and r2; values below eps are used as eps (the reference's clamp).
    kerple.attention_bias(6, 6).sum().backward()
    assert kerple.r1.grad is not None and kerple.r2.grad is not None


# ---- FIRE (Li et al. 2023) ----


def test_fire_is_an_mlp_of_the_normalised_log_distance() -> None:
    torch.manual_seed(0)
    fire = FIRE(2, causal=True, mlp_width=5, init_threshold=4.0)
    with torch.no_grad():
        fire.c.fill_(0.3)
        fire.threshold_multiplier.fill_(1.5)  # L = 6
    w1, b1 = fire.mlp[0].weight[0], fire.mlp[0].bias[0]
    w2, b2 = fire.mlp[2].weight[0], fire.mlp[2].bias[0]
    n = 9
    bias = fire.attention_bias(n, n)[0].detach()

    def psi(x: float) -> float:
        return math.log(abs(0.3 * x) + 1)

    for i in range(n):
        for j in range(i + 1):
            u = psi(i - j) / (psi(max(i, 6.0)) + 1e-6)
            hidden = torch.relu(w1[:, 0] * u + b1)
            expected = w2 @ hidden + b2
            torch.testing.assert_close(bias[:, i, j], expected.detach(), rtol=1e-5, atol=1e-6)


# ---- xPos (Sun et al. 2022; torchscale's XPOS) ----


def test_xpos_rotates_as_rope_and_scales_queries_up_and_keys_down() -> None:
    torch.manual_seed(0)
    d, n, scale_base = 8, 6, 4.0
    xpos = XPos(d, 1, scale_base=scale_base)
    q, k = torch.randn(2, 1, 1, 1, n, d).unbind(0)
    rq, rk = xpos.rotate(q, k)
    zeta = [(2 * i + 0.4 * d) / (1.4 * d) for i in range(d // 2)]
    offset = math.ceil(n / 2)  # torchscale: positions from -(n // 2 rounded up) ("min_pos = -(length + offset) // 2")
    for m in range(n):
        angle = [m * 10000 ** (-2 * i / d) for i in range(d // 2)]
        up = [z ** ((m - offset) / scale_base) for z in zeta]
        torch.testing.assert_close(rq[0, 0, 0, m], rotate_pairs_by_hand(q[0, 0, 0, m], angle, up), rtol=1e-5, atol=1e-6)
        down = [1 / u for u in up]
        torch.testing.assert_close(
            rk[0, 0, 0, m], rotate_pairs_by_hand(k[0, 0, 0, m], angle, down), rtol=1e-5, atol=1e-6
        )
    # The logit of (n, m) decays as zeta^((n - m) / scale_base): relative, whatever the offset.
    shifted = xpos.rotate(q, k, torch.arange(n)[None] + 50)
    torch.testing.assert_close(
        rq @ rk.transpose(-1, -2), shifted[0] @ shifted[1].transpose(-1, -2), rtol=1e-4, atol=1e-5
    )


# ---- RoPE beyond the training length: linear, NTK-aware, YaRN ----


def test_rope_scaling_frequencies_follow_the_papers_formulas() -> None:
    d, base, s, trained = 16, 10000.0, 4.0, 64
    theta = [base ** (-2 * i / d) for i in range(d // 2)]
    linear, m = rope_frequencies(d, base, "linear", s, 256, trained)
    assert m == 1.0 and linear.tolist() == pytest.approx([t / s for t in theta])
    # NTK-aware, HF's dynamic form: base * (s L / L_train - (s - 1))^(d/(d-2)); at L = L_train no change.
    ntk, _ = rope_frequencies(d, base, "ntk", s, 256, trained)
    scaled = base * (s * 256 / 64 - (s - 1)) ** (d / (d - 2))
    assert ntk.tolist() == pytest.approx([scaled ** (-2 * i / d) for i in range(d // 2)])
    assert rope_frequencies(d, base, "ntk", s, 64, trained)[0].tolist() == pytest.approx(theta)
    # YaRN (Peng et al. 2023, Eq. 18-20; HF _compute_yarn_parameters, beta_fast 32, beta_slow 1): dimensions whose
    # wavelength 2 pi / theta_i is short (> 32 turns in L_train) keep theta_i, long ones (< 1 turn) get theta_i / s,
    # a linear ramp between; attention factor 0.1 ln s + 1.
    yarn, attention = rope_frequencies(d, base, "yarn", s, 256, trained)
    assert attention == pytest.approx(0.1 * math.log(4) + 1)
    low = math.floor(d * math.log(64 / (32 * 2 * math.pi)) / (2 * math.log(base)))
    high = math.ceil(d * math.log(64 / (1 * 2 * math.pi)) / (2 * math.log(base)))
    low, high = max(low, 0), min(high, d - 1)
    assert (low, high) == (0, 3)  # by hand: floor(16 ln(64 / 64 pi) / 2 ln 1e4) < 0; ceil(16 ln(64 / 2 pi) / 18.42) = 3
    for i in range(d // 2):
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)
        expected = theta[i] / s * ramp + theta[i] * (1 - ramp)
        assert yarn[i].item() == pytest.approx(expected)


def test_rope_scales_only_evaluation_passes_longer_than_the_training_length() -> None:
    torch.manual_seed(0)
    plain, linear = RoPE(8, 1), RoPE(8, 1, scaling="linear", scaling_factor=2.0)
    q, k = torch.randn(2, 1, 1, 1, 12, 8).unbind(0)
    linear.train()
    for a, b in zip(
        linear.rotate(q[..., :6, :], k[..., :6, :]), plain.rotate(q[..., :6, :], k[..., :6, :]), strict=True
    ):
        torch.testing.assert_close(a, b)  # training: unscaled, and the length recorded
    assert linear.trained_length.item() == 6 and "trained_length" in linear.state_dict()
    linear.eval()
    torch.testing.assert_close(
        linear.rotate(q[..., :6, :], k[..., :6, :])[0], plain.rotate(q[..., :6, :], k[..., :6, :])[0]
    )
    half = torch.arange(12)[None] / 2  # position interpolation: n -> n / s
    torch.testing.assert_close(linear.rotate(q, k)[0], plain.rotate(q, k, half)[0], rtol=1e-5, atol=1e-6)
    everywhere = RoPE(8, 1, scaling="linear", scaling_factor=2.0, scaling_lengths="all").train()
    torch.testing.assert_close(everywhere.rotate(q, k)[0], plain.rotate(q, k, half)[0], rtol=1e-5, atol=1e-6)
    # YaRN's temperature multiplies queries and keys by 0.1 ln s + 1.
    yarn = RoPE(8, 1, scaling="yarn", scaling_factor=4.0)
    yarn.trained_length.fill_(6)
    yarn.eval()
    factor = 0.1 * math.log(4) + 1
    assert yarn.rotate(q, k)[0].norm().item() == pytest.approx(factor * q.norm().item(), rel=1e-5)


# ---- CoPE (Golovneva et al. 2024) ----


def test_cope_counts_gates_and_interpolates_the_position_logits() -> None:
    torch.manual_seed(0)
    d, n, npos = 4, 6, 4
    cope = CoPE(d, 1, depth=2, num_embeddings=npos)
    with torch.no_grad():
        cope.embeddings.normal_()
    q, k = torch.randn(2, 1, 1, 1, n, d).unbind(0)
    bias = cope.contextual_bias(q, k, layer=1)[0, 0, 0].detach()
    table = cope.embeddings[0, 1].detach()  # (d, npos)
    for i in range(n):
        z = [float(q[0, 0, 0, i] @ table[:, p]) for p in range(npos)]
        for j in range(i + 1):
            p = sum(torch.sigmoid(q[0, 0, 0, i] @ k[0, 0, 0, t] / math.sqrt(d)).item() for t in range(j, i + 1))
            p = min(p, npos - 1)
            lo, hi = math.floor(p), math.ceil(p)
            expected = z[hi] * (p - lo) + z[lo] * (1 - (p - lo))
            assert bias[i, j].item() == pytest.approx(expected, rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="causal"):
        CoPE(d, 1, depth=1, causal=False)


# ---- Randomized (Ruoss et al. 2023) ----


def test_randomized_draws_sorted_distinct_positions_per_step_and_ordinary_ones_at_evaluation() -> None:
    torch.manual_seed(3)
    wrapper = Randomized(RoPE(8, 1), position_range=50)
    wrapper.train()
    first, second = wrapper.positions(10, torch.device("cpu")), wrapper.positions(10, torch.device("cpu"))
    for drawn in (first, second):
        assert drawn.shape == (1, 10) and (drawn >= 0).all() and (drawn < 50).all()
        assert (drawn[0, 1:] > drawn[0, :-1]).all()  # sorted and distinct
    assert not torch.equal(first, second) and wrapper.step.item() == 2
    wrapper.step.zero_()
    assert torch.equal(wrapper.positions(10, torch.device("cpu")), first)  # a function of (key, step)
    wrapper.eval()
    assert wrapper.positions(10, torch.device("cpu")) is None  # 0..L-1
    wrapper.eval_positions = "random"
    assert wrapper.positions(10, torch.device("cpu")).shape == (1, 10)
    with pytest.raises(LengthError, match="position_range"):
        wrapper.positions(51, torch.device("cpu"))
    # Over many steps every position is drawn about equally often (a uniform subset: 10/50 each time).
    wrapper.train()
    counts = torch.bincount(
        torch.cat([wrapper.positions(10, torch.device("cpu"))[0] for _ in range(2000)]), minlength=50
    )
    assert counts.min().item() > 0.8 * 400 and counts.max().item() < 1.2 * 400


def test_randomized_replica_k_draws_as_the_single_encoding_of_seed_k() -> None:
    def built(seed: int) -> Randomized:
        torch.manual_seed(seed)
        return Randomized(LearnedAbsolute(40, 4), position_range=40)

    stacked = stack_replicas([built(5), built(6)]).train()
    singles = [built(5).train(), built(6).train()]
    x = torch.zeros(1, 1, 8, 4)
    for _ in range(3):
        out = stacked(x, stacked.positions(8, torch.device("cpu")))
        for k, single in enumerate(singles):
            torch.testing.assert_close(out[k], single(x, single.positions(8, torch.device("cpu")))[0])


# ---- the model: the fused path (SDPA with the bias as its mask) agrees with attention written out ----


def new_encoding(name: str, causal: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return {
        "xpos": lambda: XPos(16, 4, scale_base=8.0),
        "kerple": lambda: KERPLE(4, causal=causal),
        "fire": lambda: FIRE(4, causal=causal, init_threshold=4.0),
        "cope": lambda: CoPE(16, 4, depth=2),
        "randomized": lambda: Randomized(ALiBi(4, causal=causal), max_positions=40, eval_positions="random"),
    }[name]()


@pytest.mark.parametrize(
    ("name", "causal"),
    [(n, c) for n in ("xpos", "kerple", "fire", "cope", "randomized") for c in (False, True) if c or n != "cope"],
)
def test_sdpa_and_hand_written_attention_agree(name: str, causal: bool) -> None:
    from posenc_exp.models.attention import AttentionStack

    encoding = new_encoding(name, causal)
    if name == "cope":
        with torch.no_grad():
            encoding.embeddings.normal_()  # zero at init: make the contextual bias matter
    torch.manual_seed(0)
    model = AttentionStack(16, 4, 2, encoding, vocab_size=8, causal=causal).eval()
    x = torch.randint(0, 8, (1, 3, 12), generator=torch.Generator().manual_seed(1))
    internals = attention_three_ways(model, x)
    if causal:
        assert internals.attention[0].triu(1).abs().max() == 0


# ---- configuration: every option composes, is checked, and refuses bad values in one line ----


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["encoding=cope"], "model.causal=true"),
        (["encoding=randomized", "encoding.base=alibi"], "encoding@encoding.base=alibi"),
        (["encoding=randomized", "encoding@encoding.base=learned", "encoding.position_range=100"], "rows"),
        (["encoding=randomized", "encoding.position_range=0"], "encoding.position_range"),
        (["encoding=randomized", "encoding@encoding.base=cope"], "uses positions"),
        (["encoding=randomized", "encoding.base.base=0.5"], "encoding.base.base"),
        (["encoding=rope", "encoding.scaling=dynamic"], "encoding.scaling"),
        (["encoding=rope", "encoding.scaling_factor=0.5"], "encoding.scaling_factor"),
        (["encoding=kerple", "encoding.eps=0"], "encoding.eps"),
        (["encoding=fire", "encoding.init_c=-1"], "encoding.init_c"),
        (["encoding=xpos", "encoding.scale_base=0"], "encoding.scale_base"),
    ],
)
def test_bad_values_are_refused_naming_the_key(overrides: list[str], message: str) -> None:
    cfg = compose_train(["model=attention", "data=copy", *overrides])
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        check_components(cfg)


def test_the_randomized_wrapper_composes_any_base_option() -> None:
    for base in ("learned", "sinusoidal", "rope", "xpos", "alibi", "t5", "kerple", "fire"):
        cfg = compose_train(["model=attention", "data=copy", "model.causal=true", "encoding=randomized",
                             f"encoding@encoding.base={base}"])  # fmt: skip
        check_components(cfg)
        net = instantiate(cfg.model).train()
        assert type(net.encoding.base).__name__ == cfg.encoding.base._target_.rsplit(".", 1)[1]
        assert net(torch.randint(0, 8, (1, 2, 6))).shape == (1, 2, 6, cfg.model.vocab_size)


# ---- the real CLI: each new option trains and evaluates past the training length ----

NEW = ["kerple", "fire", "xpos", "cope", "randomized"]
TINY = [
    *("model=attention", "model.causal=true", "model.d_model=16", "model.n_heads=2", "model.depth=1"),
    *("data=copy", "data.length=4", "data.n_train=64", "data.n_val=32"),
    *("trainer.max_epochs=1", "callbacks.progress_bar=null"),
]


@pytest.mark.slow
def test_each_new_option_trains_through_the_cli(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_cli("-m", *TINY, f"encoding={','.join(NEW)}", f"hydra.sweep.dir={sweep}")
    for job, option in enumerate(NEW):
        metrics = read_metrics(sweep / str(job))
        assert math.isfinite(metrics["val_loss"]), option
        assert set(metrics["eval"]) == {"4", "5", "6", "8"}, option  # evaluated up to 2x the training length
    # RoPE with YaRN: the checkpoint keeps the training length that decides which passes are scaled.
    run = tmp_path / "yarn"
    run_cli(*TINY, "encoding=rope", "encoding.scaling=yarn", "encoding.scaling_factor=2", f"hydra.run.dir={run}")
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    # copy of n = 4 items: n items, SEP, n items, the input shifted by one for teacher forcing: 2n tokens; the
    # evaluations at 5, 6 and 8 items are longer and were scaled.
    assert state["net.encoding.trained_length"].item() == 2 * 4
