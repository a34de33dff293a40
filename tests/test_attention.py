"""The attention model: symmetry, the fused and hand-written paths, switches, internals."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import attention_three_ways

from posenc_exp.encodings import ALiBi, NoPE, RoPE, T5Bias
from posenc_exp.models import AttentionStack
from posenc_exp.models.attention import attention_matrix
from posenc_exp.models.layers import LayerNorm

VOCAB, LENGTH = 11, 9


def token_model(causal: bool, encoding=None, **switches) -> AttentionStack:
    torch.manual_seed(0)
    return AttentionStack(16, 4, 2, encoding or NoPE(), vocab_size=VOCAB, causal=causal, **switches).eval()


def tokens(batch: int = 4, length: int = LENGTH) -> torch.Tensor:
    """Token ids ``(1, batch, length)``: one replica's batch."""
    return torch.randint(0, VOCAB, (1, batch, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
@pytest.mark.parametrize("softmax", [True, False])
def test_nope_without_causal_mask_is_permutation_equivariant(norm: str, softmax: bool) -> None:
    model, x = token_model(causal=False, norm=norm, softmax=softmax), tokens()
    permutation = torch.randperm(LENGTH, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x[..., permutation]), model(x)[:, :, permutation], atol=1e-5, rtol=1e-5)


def test_causal_mask_breaks_permutation_equivariance() -> None:
    model, x = token_model(causal=True), tokens()
    permutation = torch.randperm(LENGTH, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (model(x[..., permutation]) - model(x)[:, :, permutation]).abs().max() > 1e-3


def test_causal_output_ignores_later_positions() -> None:
    model, x = token_model(causal=True), tokens()
    changed = x.clone()
    changed[..., 5:] = (changed[..., 5:] + 1) % VOCAB
    with torch.no_grad():
        torch.testing.assert_close(model(changed)[:, :, :5], model(x)[:, :, :5])


ENCODINGS = {
    "none": lambda causal: NoPE(),
    "rope": lambda causal: RoPE(16, 4),
    "alibi": lambda causal: ALiBi(4, causal=causal),
    "t5": lambda causal: T5Bias(4, causal=causal),
}


@pytest.mark.parametrize(("name", "causal"), itertools.product(ENCODINGS, [False, True]))
def test_sdpa_and_hand_written_attention_agree_with_softmax(name: str, causal: bool) -> None:
    model, x = token_model(causal, ENCODINGS[name](causal)), tokens()
    internals = attention_three_ways(model, x)
    probabilities = internals.attention[0]
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(probabilities.shape[:-1]))
    if causal:
        assert probabilities.triu(1).abs().max() == 0


def test_softmax_off_divides_by_the_number_of_attended_keys() -> None:
    q = torch.ones(1, 1, 4, 2)
    scores = torch.full((4, 4), 2 / 2**0.5)  # q.k / sqrt(d_head) with q = k = (1, 1)
    torch.testing.assert_close(attention_matrix(q, q, None, causal=False, softmax=False)[0, 0], scores / 4)
    causal = attention_matrix(q, q, None, causal=True, softmax=False)[0, 0]
    torch.testing.assert_close(causal, scores.tril() / torch.arange(1, 5)[:, None])


def test_internals_have_one_entry_per_layer() -> None:
    torch.manual_seed(0)
    model = AttentionStack(8, 2, 3, NoPE(), softmax=False, residual=False, norm="none", mlp=False)
    x = torch.randn(1, 5, 7)
    out, internals = model(x, return_internals=True)
    assert out.shape == (1, 5)
    assert internals.inputs.shape == (1, 5, 7, 8)
    assert [h.shape for h in internals.layers] == [(1, 5, 7, 8)] * 3
    assert [a.shape for a in internals.attention] == [(1, 5, 2, 7, 7)] * 3
    torch.testing.assert_close(model(x), out)


def test_switches_change_the_architecture() -> None:
    plain = AttentionStack(8, 2, 2, NoPE(), residual=False, norm="none", mlp=False)
    full = AttentionStack(8, 2, 2, NoPE())
    assert not any(isinstance(m, LayerNorm) for m in plain.modules())
    assert any(isinstance(m, LayerNorm) for m in full.modules())
    assert all(block.mlp is None for block in plain.blocks)
    assert sum(p.numel() for p in full.parameters()) > sum(p.numel() for p in plain.parameters())


def test_bias_is_shared_by_all_layers() -> None:
    encoding = T5Bias(4, causal=True)
    model = token_model(True, encoding)
    assert sum(isinstance(m, T5Bias) for m in model.modules()) == 1
    loss = model(tokens()).sum()
    loss.backward()
    assert encoding.relative_bias.grad is not None
