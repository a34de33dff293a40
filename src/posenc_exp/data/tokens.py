"""Token tasks: copy, reverse, sort and associative recall, in one prompt-then-answer format.

Vocabulary: ``PAD = 0``, ``SEP = 1``, and the symbols ``2 .. vocab_size - 1``. An example is a token
sequence ``s = prompt + answer``; the model reads ``s[:-1]`` and, at each position ``t``, is trained to
predict ``s[t + 1]`` (teacher forcing), with the loss only on the answer tokens. Targets elsewhere are
``IGNORE = -100`` (``cross_entropy``'s ``ignore_index``)::

    copy     prompt  x_1 .. x_n SEP        answer  x_1 .. x_n
    reverse  prompt  x_1 .. x_n SEP        answer  x_n .. x_1
    sort     prompt  x_1 .. x_n SEP        answer  the x_i in increasing order
    recall   prompt  k_1 v_1 .. k_n v_n SEP q   answer  v_i where k_i = q

For example, copy of ``(5, 3)``: input ``5 3 SEP 5``, targets ``-100 -100 5 3``. The answer tokens are
inputs too (teacher forcing), so these tasks need a causal model (else position ``t`` could read
``s[t + 1]``). Because each prediction conditions on the true prefix, a sequence is exactly right under
teacher forcing if and only if greedy decoding reproduces it, so the sequence accuracy equals the exact
match of greedy generation (the metric of Kazemnejad et al. 2023); the token accuracy is teacher-forced.

The length ``n`` counts items (symbols; key-value pairs for recall). Training examples have
``n ~ Uniform{min_length .. length}``, padded on the right with ``PAD`` (ignored targets; a causal model's
earlier positions never see the padding); validation at each evaluation length uses exactly that ``n``.
Symbols are drawn uniformly with replacement (recall: distinct keys from the first half of the symbols,
values from the second half).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from posenc_exp.data.lengths import LengthGeneralizationTask
from posenc_exp.schemas.data import FIRST_SYMBOL, PAD, SEP, RecallSpec, TokensSpec

IGNORE = -100


class TokenTask(LengthGeneralizationTask, TokensSpec):
    """The prompt-then-answer format of the module docstring; subclasses implement :meth:`prompt_and_answer`.

    ``tokens_per_item`` and ``extra_tokens`` give the model's input length ``tokens_per_item * n +
    extra_tokens`` for ``n`` items.
    """

    def __init__(self, vocab_size: int, min_length: int, **task: Any) -> None:
        super().__init__(**task)
        self.vocab_size = vocab_size
        self.n_symbols = vocab_size - FIRST_SYMBOL
        self.min_length = min_length

    def symbols(self, count: int, n: int, generator: torch.Generator) -> Tensor:
        """``(count, n)`` symbols drawn uniformly with replacement."""
        return torch.randint(FIRST_SYMBOL, self.vocab_size, (count, n), generator=generator)

    def prompt_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``count`` examples of ``n`` items: prompts ``(count, P)`` and answers ``(count, A)``."""
        raise NotImplementedError

    def sample(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Inputs ``s[:, :-1]`` and targets ``s[:, 1:]`` with every non-answer target set to ``IGNORE``."""
        prompt, answer = self.prompt_and_answer(count, n, generator)
        sequence = torch.cat([prompt, answer], dim=1)
        targets = sequence[:, 1:].clone()
        targets[:, : prompt.shape[1] - 1] = IGNORE
        return sequence[:, :-1].contiguous(), targets

    def sample_train(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n_train`` examples of lengths ``Uniform{min_length .. length}``, right-padded to the longest."""
        lengths = torch.randint(self.min_length, self.length + 1, (self.n_train,), generator=generator)
        width = self.input_length(self.length)
        inputs = torch.full((self.n_train, width), PAD)
        targets = torch.full((self.n_train, width), IGNORE)
        for n in lengths.unique().tolist():
            rows = (lengths == n).nonzero().squeeze(1)
            x, y = self.sample(len(rows), n, generator)
            inputs[rows, : x.shape[1]], targets[rows, : y.shape[1]] = x, y
        return inputs, targets


class Copy(TokenTask):
    """Copy ``x_1 .. x_n`` after ``SEP``: the answer at step ``i`` is the item ``n + 1`` positions back."""

    def prompt_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        items = self.symbols(count, n, generator)
        return torch.cat([items, torch.full((count, 1), SEP)], dim=1), items


class Reverse(TokenTask):
    """Reverse ``x_1 .. x_n`` after ``SEP``: the answer at step ``i`` is ``x_{n+1-i}``."""

    def prompt_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        items = self.symbols(count, n, generator)
        return torch.cat([items, torch.full((count, 1), SEP)], dim=1), items.flip(1)


class Sort(TokenTask):
    """Sort ``x_1 .. x_n`` after ``SEP``. The control: the answer depends on the multiset of items, not on
    their order, so position is not needed (the next answer is the smallest item not yet emitted)."""

    def prompt_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        items = self.symbols(count, n, generator)
        return torch.cat([items, torch.full((count, 1), SEP)], dim=1), items.sort(dim=1).values


class AssociativeRecall(TokenTask, RecallSpec):
    """``k_1 v_1 .. k_n v_n SEP q`` -> the value ``v_i`` of the key ``k_i = q``.

    Keys are ``n`` distinct symbols from the first ``n_symbols // 2``, values any of the rest, the query
    one of the keys, uniformly. The answer is one token, so token and sequence accuracy coincide; the
    longest evaluation length must not exceed the number of keys.
    """

    @property
    def n_keys(self) -> int:
        return self.n_symbols // 2

    def prompt_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        keys = torch.rand(count, self.n_keys, generator=generator).argsort(dim=1)[:, :n] + FIRST_SYMBOL
        values = torch.randint(
            FIRST_SYMBOL + self.n_keys, self.vocab_size, (count, n), generator=generator, dtype=torch.long
        )
        pairs = torch.stack([keys, values], dim=2).flatten(1)
        chosen = torch.randint(0, n, (count, 1), generator=generator)
        query, answer = keys.gather(1, chosen), values.gather(1, chosen)
        return torch.cat([pairs, torch.full((count, 1), SEP), query], dim=1), answer
