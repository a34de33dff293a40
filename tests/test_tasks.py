"""The task generators: each answer is right, lengths and padding follow the format, data is seeded."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from posenc_exp.config import compose_train
from posenc_exp.data import AssociativeRecall, AutoregressiveWindows, Copy, LagWindows, Reverse, Sort, eval_lengths
from posenc_exp.data.ar import is_stationary
from posenc_exp.data.tokens import IGNORE, PAD, SEP

TOKEN_ARGS = dict(min_length=1, length=6, eval_factors=[1.0, 1.5, 2.0], n_train=300, n_val=64, batch_size=8)
COMMON = dict(chunk_steps=4, seed=3, max_positions=64)


def token_task(cls, vocab_size: int = 12, **overrides):
    task = cls(vocab_size=vocab_size, **{**TOKEN_ARGS, **COMMON, **overrides})
    task.setup()
    return task


def answer(task, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Items, the answer targets and the answer inputs of the validation split of length ``n``."""
    x, y = task.splits[f"val@{n}"]
    return x[:, :n], y[:, n:], x[:, n + 1 :]


def test_eval_lengths_round_half_up_and_always_include_the_training_length() -> None:
    assert eval_lengths(8, [1.0, 1.25, 1.5, 2.0]) == [8, 10, 12, 16]
    assert eval_lengths(10, [1.25, 2.0]) == [10, 13, 20]
    assert eval_lengths(6, [0.5]) == [3, 6]


@pytest.mark.parametrize(
    ("cls", "expected"),
    [(Copy, lambda items: items), (Reverse, lambda items: items.flip(1)), (Sort, lambda items: items.sort(1).values)],
)
def test_copy_reverse_sort_answers(cls, expected) -> None:
    task = token_task(cls)
    for n in task.eval_lengths:
        items, targets, answer_inputs = answer(task, n)
        x, y = task.splits[f"val@{n}"]
        assert x.shape == y.shape == (64, 2 * n)
        assert (x[:, n] == SEP).all() and (items >= 2).all() and (items < 12).all()
        assert (y[:, :n] == IGNORE).all()
        torch.testing.assert_close(targets, expected(items))
        torch.testing.assert_close(answer_inputs, targets[:, :-1])  # teacher forcing: the answer, shifted


def test_reverse_targets_are_the_reversed_inputs() -> None:
    task = token_task(Reverse)
    items, targets, _ = answer(task, 6)
    assert all(targets[i].tolist() == items[i].tolist()[::-1] for i in range(len(items)))


def test_sort_targets_are_sorted_and_a_permutation_of_the_inputs() -> None:
    items, targets, _ = answer(token_task(Sort), 9)
    assert (targets[:, 1:] >= targets[:, :-1]).all()
    assert all(sorted(items[i].tolist()) == targets[i].tolist() for i in range(len(items)))


def test_recall_answers_the_value_of_the_queried_key() -> None:
    task = token_task(AssociativeRecall, vocab_size=2 + 2 * 12)
    for n in task.eval_lengths:
        x, y = task.splits[f"val@{n}"]
        assert x.shape == (64, 2 * n + 2)
        keys, values, query = x[:, 0 : 2 * n : 2], x[:, 1 : 2 * n : 2], x[:, -1]
        assert (x[:, 2 * n] == SEP).all()
        assert all(len(set(row.tolist())) == n for row in keys)  # distinct keys
        assert ((keys - 2) < 12).all() and ((values - 2) >= 12).all()
        position = (keys == query[:, None]).int().argmax(dim=1)
        assert (keys.gather(1, position[:, None]).squeeze(1) == query).all()
        assert (y[:, -1] == values.gather(1, position[:, None]).squeeze(1)).all()
        assert (y[:, :-1] == IGNORE).all()


def test_training_lengths_vary_up_to_the_training_length_and_are_padded() -> None:
    task = token_task(Copy, min_length=2)
    x, y = task.splits["train"]
    assert x.shape == y.shape == (300, 12)
    lengths = (y != IGNORE).sum(dim=1)
    assert lengths.min() == 2 and lengths.max() == 6 and len(lengths.unique()) == 5
    for row, n in zip(range(20), lengths.tolist(), strict=False):
        assert x[row, n] == SEP
        assert (x[row, 2 * n :] == PAD).all() and (y[row, 2 * n :] == IGNORE).all()
        assert y[row, n : 2 * n].tolist() == x[row, :n].tolist()


def test_lag_target_is_the_value_k_steps_back() -> None:
    task = LagWindows(lag=3, length=10, eval_factors=[1.0, 2.0], n_train=50, n_val=40, batch_size=8, **COMMON)
    task.setup()
    for n in (10, 20):
        x, y = task.splits[f"val@{n}"]
        assert x.shape == (40, n)
        torch.testing.assert_close(y, x[:, -3])
    assert task.loss_floor == 0.0


def test_ar_floor_is_sigma_squared_and_reached_by_the_true_predictor() -> None:
    coefficients, sigma = [0.6, -0.5, 0.3], 0.5
    task = AutoregressiveWindows(
        coefficients=coefficients, sigma=sigma, burn_in=50, length=8, eval_factors=[1.0, 2.0], **COMMON,
        n_train=20_000, n_val=20_000, batch_size=8,
    )  # fmt: skip
    task.setup()
    assert task.loss_floor == sigma**2
    for n in (8, 16):
        x, y = task.splits[f"val@{n}"]
        best = x[:, -1] * 0.6 + x[:, -2] * -0.5 + x[:, -3] * 0.3
        assert (y - best).square().mean().item() == pytest.approx(sigma**2, rel=0.03)
    # The least-squares fit on the training windows recovers the coefficients (and nothing further back).
    x, y = task.splits["train"]
    fit = torch.linalg.lstsq(x.double(), y.double()[:, None]).solution.squeeze(1)
    torch.testing.assert_close(fit[-3:].flip(0), torch.tensor(coefficients, dtype=torch.float64), atol=0.03, rtol=0)
    assert fit[:-3].abs().max() < 0.03


def test_stationarity() -> None:
    assert is_stationary([0.5]) and is_stationary([0.6, -0.5, 0.3])
    assert not is_stationary([1.0]) and not is_stationary([0.5, 0.6])


def test_data_is_seeded() -> None:
    first, again = token_task(Copy), token_task(Copy)
    other = Copy(vocab_size=12, **{**TOKEN_ARGS, **COMMON, "seed": 4})
    other.setup()
    torch.testing.assert_close(first.splits["train"], again.splits["train"])
    assert not torch.equal(first.splits["train"][0], other.splits["train"][0])


@pytest.mark.parametrize(
    ("task", "max_positions"), [("copy", 32), ("reverse", 32), ("sort", 32), ("recall", 34), ("ar", 32)]
)
def test_max_positions_covers_the_longest_evaluation_input(task: str, max_positions: int) -> None:
    cfg = compose_train(["model=attention", f"data={task}"])
    assert cfg.data.max_positions == max_positions
    assert cfg.model.encoding.max_positions == max_positions
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    longest = datamodule.eval_lengths[-1]
    assert datamodule.splits[f"val@{longest}"][0].shape[1] == max_positions
    assert len(datamodule.val_dataloader()) == len(datamodule.eval_lengths) == 4
