"""Each encoding family against its paper's formula, on tensors; every encoding config composes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from posenc_exp import CONFIG_DIR
from posenc_exp.config import compose_train
from posenc_exp.encodings import (
    ALiBi,
    LearnedAbsolute,
    LengthError,
    NoPE,
    PositionalEncoding,
    RoPE,
    Sinusoidal,
    T5Bias,
    alibi_slopes,
    t5_bucket,
)
from posenc_exp.images import snapshot_images

ENCODING_OPTIONS = sorted(p.stem for p in (CONFIG_DIR / "encoding").glob("*.yaml"))


# --- sinusoidal -------------------------------------------------------------------------------------------


def test_sinusoid_matches_the_formula_of_vaswani_et_al() -> None:
    d_model, length = 6, 50
    encoding = Sinusoidal(d_model=d_model, max_positions=length)
    table = encoding(torch.zeros(1, 1, length, d_model))[0, 0]  # (replica, batch, length, d_model)
    for pos in range(length):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_fixed_sinusoid_serves_any_length_and_is_not_trained_or_saved() -> None:
    encoding = Sinusoidal(d_model=4, max_positions=8)
    long = encoding(torch.zeros(1, 2, 100, 4))[0, 0]
    assert long[99, 0].item() == pytest.approx(math.sin(99), abs=1e-6)
    assert long[99, 3].item() == pytest.approx(math.cos(99 / 100), abs=1e-6)
    assert not encoding.trainable and list(encoding.parameters()) == []
    assert encoding.state_dict() == {}
    assert encoding.snapshot().shape == (1, 8, 4)  # the snapshot keeps max_positions rows after the cache grew


def test_learnable_sinusoid_starts_at_the_sinusoid_trains_and_stops_at_its_length() -> None:
    fixed, learnable = Sinusoidal(d_model=4, max_positions=8), Sinusoidal(d_model=4, max_positions=8, learnable=True)
    x = torch.randn(1, 3, 8, 4)
    assert torch.equal(learnable(x), fixed(x))
    learnable(x).sum().backward()
    assert learnable.trainable and learnable.table.grad is not None
    with pytest.raises(LengthError, match=r"encoding=sinusoidal .*encoding\.max_positions=8.*length 9"):
        learnable(torch.zeros(1, 1, 9, 4))


# --- learned ------------------------------------------------------------------------------------------------


def test_learned_table_past_its_length_raises_a_clear_length_error() -> None:
    encoding = LearnedAbsolute(max_positions=10, d_model=3)
    assert encoding(torch.zeros(1, 2, 10, 3)).shape == (1, 2, 10, 3)
    with pytest.raises(LengthError) as error:
        encoding(torch.zeros(1, 2, 11, 3))
    message = str(error.value)
    assert "encoding=learned" in message and "encoding.max_positions=10" in message and "data.max_positions" in message
    assert "length 11" in message


# --- RoPE -------------------------------------------------------------------------------------------------


def test_rope_preserves_norms() -> None:
    rope = RoPE(d_model=32, n_heads=2, max_positions=4)
    q, k = torch.randn(3, 2, 40, 16), torch.randn(3, 2, 40, 16)
    q_rotated, k_rotated = rope.rotate(q, k)
    torch.testing.assert_close(q_rotated.norm(dim=-1), q.norm(dim=-1))
    torch.testing.assert_close(k_rotated.norm(dim=-1), k.norm(dim=-1))
    torch.testing.assert_close(q_rotated[..., 0, :], q[..., 0, :])  # position 0 is not rotated


def test_rope_scores_depend_only_on_the_relative_position() -> None:
    """The same q at every position i and k at every j: (R_i q).(R_j k) is a function of i - j."""
    rope, length, d_head = RoPE(d_model=8, n_heads=1), 24, 8
    q = torch.randn(d_head, dtype=torch.float64).expand(1, 1, length, d_head)
    k = torch.randn(d_head, dtype=torch.float64).expand(1, 1, length, d_head)
    q_rotated, k_rotated = rope.rotate(q, k)
    scores = (q_rotated @ k_rotated.transpose(-1, -2))[0, 0]
    for offset in range(-length + 1, length):
        diagonal = torch.diagonal(scores, offset)
        torch.testing.assert_close(diagonal, diagonal[0].expand_as(diagonal), rtol=0, atol=1e-5)
    assert not torch.allclose(scores[0, 0], scores[0, 1])  # and it does depend on it


def test_rope_rotates_pair_i_by_position_times_base_power() -> None:
    """Su et al. 2021, Eq. 34: pair (2i, 2i+1) at position m turns by m * 10000^(-2i/d)."""
    d_head, m, i = 8, 5, 2
    rope = RoPE(d_model=d_head, n_heads=1)
    q = torch.zeros(1, 1, m + 1, d_head)
    q[..., 2 * i] = 1.0
    rotated, _ = rope.rotate(q, q)
    angle = m * 10000 ** (-2 * i / d_head)
    assert rotated[0, 0, m, 2 * i].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert rotated[0, 0, m, 2 * i + 1].item() == pytest.approx(math.sin(angle), abs=1e-6)


def test_rope_takes_strided_views_and_low_precision() -> None:
    rope = RoPE(d_model=16, n_heads=2)
    fused = torch.randn(2, 10, 3 * 16)  # a fused q|k|v projection, split and moved to (batch, heads, L, d)
    q, k, _ = (part.unflatten(-1, (2, 8)).transpose(1, 2) for part in fused.split(16, dim=-1))
    assert not q.is_contiguous()
    for rotated, original in zip(rope.rotate(q, k), rope.rotate(q.contiguous(), k.contiguous()), strict=True):
        torch.testing.assert_close(rotated, original)
    q_half, _ = rope.rotate(q.bfloat16(), k.bfloat16())
    assert q_half.dtype == torch.bfloat16
    torch.testing.assert_close(q_half.float(), rope.rotate(q, k)[0], rtol=0.02, atol=0.02)


def test_rope_needs_an_even_head_dimension() -> None:
    with pytest.raises(ValueError, match=r"model\.d_model/model\.n_heads=12/4"):
        RoPE(d_model=12, n_heads=4)


# --- ALiBi ------------------------------------------------------------------------------------------------


def test_alibi_slopes_for_a_power_of_two_heads() -> None:
    assert alibi_slopes(8) == [2.0**-h for h in range(1, 9)]


def test_alibi_slopes_for_six_heads_follow_the_papers_rule() -> None:
    """Press et al. 2022 / official code: 4 = largest power of two below 6, so the 4-head slopes
    2^(-8h/4) = 2^-2, 2^-4, 2^-6, 2^-8, then the first 6 - 4 = 2 of every other 8-head slope
    (2^-1, 2^-2, ..., 2^-8)[0::2] = 2^-1, 2^-3."""
    four_heads = [2.0 ** (-8 * h / 4) for h in range(1, 5)]
    eight_heads_every_other = [2.0 ** (-8 * h / 8) for h in range(1, 9)][0::2]
    assert alibi_slopes(6) == four_heads + eight_heads_every_other[:2]
    assert alibi_slopes(6) == [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]


@pytest.mark.parametrize("causal", [True, False])
def test_alibi_bias_is_minus_slope_times_distance_unscaled(causal: bool) -> None:
    n = 7
    bias = ALiBi(n_heads=8, causal=causal).attention_bias(n, n)
    assert bias.shape == (1, 8, n, n) and bias.dtype == torch.float32  # shared by the replicas
    for h, slope in enumerate(alibi_slopes(8)):
        for i in range(n):
            for j in range(n):
                expected = -slope * (i - j) if j <= i else (0.0 if causal else -slope * (j - i))
                assert bias[0, h, i, j].item() == pytest.approx(expected)


def test_alibi_bias_is_added_to_the_scaled_logits_as_sdpa_float_mask() -> None:
    q, k, v = torch.randn(3, 2, 4, 5, 8, dtype=torch.float64).unbind(0)
    bias = ALiBi(n_heads=4).to(torch.float64).attention_bias(5, 5)
    assert bias.dtype == torch.float64
    by_hand = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8) + bias, dim=-1) @ v
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    torch.testing.assert_close(sdpa, by_hand)


# --- T5 ---------------------------------------------------------------------------------------------------


def test_t5_buckets_are_exact_then_monotone_and_capped_one_directional() -> None:
    distance = torch.arange(0, 1000)
    buckets = t5_bucket(-distance, bidirectional=False)  # keys j = i - distance, before the query
    assert torch.equal(buckets[:16], distance[:16])  # 32 // 2 exact buckets
    assert (buckets.diff() >= 0).all()
    assert buckets.max().item() == 31 and (buckets[128:] == 31).all()  # max_distance=128 and beyond: last
    assert len(buckets[16:128].unique()) == 16  # log-spaced buckets 16..31 up to max_distance
    assert (t5_bucket(torch.arange(1, 50), bidirectional=False) == 0).all()  # future keys (masked): bucket 0


def test_t5_buckets_split_in_half_per_direction_when_bidirectional() -> None:
    distance = torch.arange(0, 1000)
    past, future = t5_bucket(-distance, bidirectional=True), t5_bucket(distance, bidirectional=True)
    assert torch.equal(past[:8], distance[:8]) and torch.equal(future[1:8], 16 + distance[1:8])
    assert future[0].item() == 0  # the query's own position counts as the past side (bucket 16 stays unused)
    for side, low, high in ((past, 0, 15), (future[1:], 17, 31)):
        assert (side.diff() >= 0).all() and side.min().item() == low and side.max().item() == high
    assert (past[128:] == 15).all() and (future[128:] == 31).all()


@pytest.mark.parametrize("causal", [True, False])
def test_t5_bias_looks_up_the_learned_table_per_head(causal: bool) -> None:
    t5 = T5Bias(n_heads=3, causal=causal)
    bias = t5.attention_bias(6, 6)
    assert bias.shape == (1, 3, 6, 6) and bias.is_contiguous()  # one replica
    table = t5.relative_bias
    for i in range(6):
        for j in range(6):
            bucket = t5_bucket(torch.tensor(j - i), bidirectional=not causal)
            torch.testing.assert_close(bias[0, :, i, j], table[0, bucket])
    bias.sum().backward()
    assert table.grad is not None and t5.snapshot().shape == (1, 32, 3)
    assert t5.attention_bias(300, 300).shape == (1, 3, 300, 300)  # any length: far positions share a bucket


# --- interface and configs --------------------------------------------------------------------------------


def test_families_say_where_they_act() -> None:
    assert NoPE.acts_on == LearnedAbsolute.acts_on == Sinusoidal.acts_on == "input"
    assert RoPE.acts_on == "rotary" and ALiBi.acts_on == T5Bias.acts_on == "bias"
    x = torch.randn(1, 2, 5, 4)
    assert torch.equal(NoPE()(x), x)
    with pytest.raises(NotImplementedError, match="acts on 'input'"):
        NoPE().attention_bias(5, 5)


@pytest.mark.parametrize(
    ("encoding", "images"),
    [
        (NoPE(), set()),
        (LearnedAbsolute(max_positions=12, d_model=4), {"table", "cosine_similarity"}),
        (LearnedAbsolute(max_positions=12, d_model=1), set()),  # the seed's vector: its history says it all
        (Sinusoidal(d_model=4, max_positions=12), {"table", "cosine_similarity"}),
        (RoPE(d_model=8, n_heads=2, max_positions=12), {"rotation"}),
        (ALiBi(n_heads=4, max_positions=12), {"bias"}),
        (T5Bias(n_heads=4, max_positions=12), {"bias"}),
    ],
)
def test_snapshot_images_are_rgb_uint8(encoding: PositionalEncoding, images: set[str]) -> None:
    rendered = snapshot_images(encoding)
    assert set(rendered) == images
    for image in rendered.values():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_cosine_similarity_image_of_a_table_has_a_red_diagonal() -> None:
    image = snapshot_images(Sinusoidal(d_model=16, max_positions=10))["cosine_similarity"]
    cell = image.shape[0] // 10
    diagonal = image[cell // 2 :: cell, cell // 2 :: cell][np.arange(10), np.arange(10)]
    assert (diagonal == [178, 24, 43]).all()  # cos(P_i, P_i) = 1 = the scale's top: full red


@pytest.mark.parametrize("option", ENCODING_OPTIONS)
def test_each_encoding_config_composes_and_runs_in_the_attention_model(option: str) -> None:
    causal = ["model.causal=true"] if option == "cope" else []  # CoPE is causal only
    cfg = compose_train(["model=attention", f"encoding={option}", *causal])
    net = instantiate(cfg.model)
    assert net.encoding is not None and type(net.encoding).__name__ == cfg.encoding._target_.rsplit(".", 1)[1]
    assert net(torch.randn(1, 4, cfg.data.length)).shape == (1, 4)


@pytest.mark.parametrize("option", ENCODING_OPTIONS)
def test_the_feedforward_model_takes_the_input_encodings_only(option: str) -> None:
    cfg = compose_train(["model=feedforward", f"encoding={option}"])
    if option in ("none", "learned", "sinusoidal"):
        net = instantiate(cfg.model)
        assert net(torch.randn(1, 4, cfg.data.length)).shape == (1, 4)
        if option == "learned":
            assert net.encoding.table.shape == (1, cfg.data.length, 1)  # the seed's vector
    else:
        with pytest.raises(InstantiationException):
            instantiate(cfg.model)
