"""The Chomsky-hierarchy tasks of Delétang et al., "Neural Networks and the Chomsky Hierarchy", ICLR 2023.

Twelve transduction tasks on strings, grouped by the lowest level of the Chomsky hierarchy whose automaton
solves them (the paper's Table 1; definitions after its Appendix A and its code,
github.com/google-deepmind/neural_networks_chomsky_hierarchy, read, not copied):

- regular: ``even_pairs``, ``parity``, ``cycle_navigation``, ``modular_arithmetic``;
- context-free (deterministic): ``reverse_string``, ``stack_manipulation``, ``modular_arithmetic_brackets``;
- context-sensitive: ``duplicate_string``, ``missing_duplicate``, ``odds_first``, ``binary_addition``,
  ``bucket_sort``.

The length ``n`` counts input tokens, as in the paper (``modular_arithmetic`` uses ``n - 1`` for even ``n``:
its expressions have odd length). Each task has a fixed alphabet; its symbols are the token ids
``FIRST_SYMBOL + i`` after ``PAD = 0`` and ``SEP = 1``, so ``data.vocab_size = 2 + len(alphabet)``. The answer of
``n`` input tokens has a fixed length ``answer_length(n)`` (1 for the classification tasks); answer positions
the paper does not score (after the end token of ``stack_manipulation`` and ``binary_addition``, its accuracy
mask) have the target ``IGNORE`` and are neither trained nor scored.

Two formats (``data.format``):

- ``encoder`` (the paper's, for its Transformer encoder; needs ``model.causal=false``): the input is the string
  followed by one ``SEP`` per answer token, the answer is read from those appended positions: inputs
  ``s_1 .. s_n SEP .. SEP``, targets ``IGNORE .. IGNORE a_1 .. a_A``. No teacher forcing.
- ``causal`` (the lab's prompt-then-answer format of :mod:`posenc_exp.data.tokens`; needs ``model.causal=true``):
  the sequence ``s_1 .. s_n SEP a_1 .. a_A``, input ``seq[:-1]``, target ``seq[1:]`` on the answer tokens only
  (teacher forcing; an unscored answer position is fed as ``PAD``).

Training (the paper's protocol): every optimizer step draws a fresh mini-batch of one length ``n ~
Uniform{1 .. data.length}`` (:class:`posenc_exp.data.base.FreshBatches`); ``data.n_train`` examples make an
epoch. Validation: ``data.n_val`` examples at each length of ``data.eval_factors`` (e.g. up to 12.5x: the paper
evaluates at ``41 .. 500`` after training on ``1 .. 40``); the score (``val/score``) is the per-token accuracy
averaged over the evaluation lengths beyond ``data.length`` (the paper's measure, its Section 4).

Generation is vectorised in torch over the examples (a loop over positions where the task is a sequential
computation: ``modular_arithmetic``, ``stack_manipulation``, ``binary_addition``), except
``modular_arithmetic_brackets``, whose grammar is sampled recursively per example with a ``random.Random``
seeded from the task's generator, as the paper does.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import Tensor

from posenc_exp.data.base import FreshBatches
from posenc_exp.data.lengths import LengthGeneralizationTask
from posenc_exp.data.tokens import FIRST_SYMBOL, IGNORE, PAD, SEP
from posenc_exp.schemas.data import (  # torch-free: the tasks' alphabets, answer lengths and checks
    BinaryAdditionSpec,
    BucketSortSpec,
    ChomskySpec,
    CycleNavigationSpec,
    DuplicateStringSpec,
    EvenPairsSpec,
    MissingDuplicateSpec,
    ModularArithmeticBracketsSpec,
    ModularArithmeticSpec,
    OddsFirstSpec,
    ParitySpec,
    ReverseStringSpec,
    StackManipulationSpec,
)


class ChomskyTask(LengthGeneralizationTask, ChomskySpec):
    """A task of the module docstring; subclasses set ``alphabet`` and ``level`` and implement
    :meth:`string_and_answer` (and :meth:`answer_length` when the answer is not one token): the first three
    (and the config checks) on their torch-free spec in :mod:`posenc_exp.schemas.data`, which they inherit."""

    scored = True  # logs val/score (posenc_exp.module)

    def __init__(self, format: str, vocab_size: int, **task: Any) -> None:
        super().__init__(**task)
        self.format, self.vocab_size = format, vocab_size

    @classmethod
    def token(cls, symbol: str) -> int:
        return FIRST_SYMBOL + cls.alphabet.index(symbol)

    @classmethod
    def tokens(cls, symbols: str, values: Tensor) -> Tensor:
        """``values`` (indices into the run of consecutive symbols starting at ``symbols``) as token ids."""
        return values + cls.token(symbols)

    @classmethod
    def terminated(cls, bits: Tensor, start: Tensor, length: Tensor, width: int) -> Tensor:
        """``bits[r, start_r : start_r + length_r]`` as ``0``/``1`` tokens, then ``END``, then ``IGNORE`` up to
        ``width`` (the answers of stack_manipulation and binary_addition)."""
        index = torch.arange(width)
        taken = bits.gather(1, (start[:, None] + index).clamp(max=bits.shape[1] - 1))
        answer = torch.where(index < length[:, None], cls.tokens("0", taken), IGNORE)
        return torch.where(index == length[:, None], cls.token("END"), answer)

    def string_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``count`` examples of ``n`` input tokens: strings ``(count, n)`` and answers ``(count, A)`` (token
        ids; ``IGNORE`` at unscored answer positions)."""
        raise NotImplementedError

    def sample(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Inputs and targets in ``self.format`` (module docstring)."""
        string, answer = self.string_and_answer(count, n, generator)
        ignored = torch.full_like(string, IGNORE)
        if self.format == "encoder":
            return torch.cat([string, torch.full_like(answer, SEP)], dim=1), torch.cat([ignored, answer], dim=1)
        fed = torch.where(answer == IGNORE, PAD, answer)[:, :-1]
        inputs = torch.cat([string, torch.full((count, 1), SEP), fed], dim=1)
        return inputs, torch.cat([ignored, answer], dim=1)

    def generate(self, generator: torch.Generator) -> dict[str, tuple[Tensor, Tensor]]:
        """The validation splits only: training batches are drawn afresh (:meth:`train_dataloader`)."""
        splits = {f"val@{n}": self.sample(self.n_val, n, generator) for n in self.eval_lengths}
        splits["val"] = splits[f"val@{self.length}"]
        return splits

    def train_dataloader(self) -> FreshBatches:
        epoch_of = (lambda: self.trainer.current_epoch) if self.trainer else None
        return FreshBatches(
            self.sample,
            self.length,
            min(self.batch_size, self.n_train),
            max(1, self.n_train // self.batch_size),
            self.chunk_steps,
            seeds=self.seeds,
            epoch_of=epoch_of,
        )


def binary(count: int, n: int, generator: torch.Generator) -> Tensor:
    """``(count, n)`` bits, uniform."""
    return torch.randint(0, 2, (count, n), generator=generator)


class EvenPairs(ChomskyTask, EvenPairsSpec):
    """Regular. A string over ``{a, b}``; the answer is whether the number of ``ab`` and ``ba`` pairs is even
    (``1``) or odd (``0``): even exactly when the first and last symbols are equal (Delétang et al. 2023)."""

    def string_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        bits = binary(count, n, generator)
        even = (bits[:, :1] == bits[:, -1:]).long()
        return self.tokens("a", bits), self.tokens("0", even)


class Parity(ChomskyTask, ParitySpec):
    """Regular. A binary string; the answer is the number of ``1`` s modulo 2 (Delétang et al. 2023,
    "parity check")."""

    def string_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        bits = binary(count, n, generator)
        return self.tokens("0", bits), self.tokens("0", bits.sum(dim=1, keepdim=True) % 2)


class CycleNavigation(ChomskyTask, CycleNavigationSpec):
    """Regular. Actions ``left`` (-1), ``stay`` (0), ``right`` (+1) on a cycle of 5 positions, starting at 0;
    the answer is the final position ``Σ move mod 5`` (Delétang et al. 2023)."""

    def string_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        actions = torch.randint(0, 3, (count, n), generator=generator)
        final = (actions - 1).sum(dim=1, keepdim=True) % 5
        return self.tokens("left", actions), self.tokens("0", final)


MODULUS = 5


class ModularArithmetic(ChomskyTask, ModularArithmeticSpec):
    """Regular. An expression ``d_0 o_1 d_1 .. o_k d_k`` of digits ``d_i ∈ {0..4}`` and operators ``o_i ∈
    {+, -, *}`` (uniform), ``* `` binding tighter than ``+ -``; the answer is its value modulo 5. The string has odd
    length: ``n``, or ``n - 1`` for even ``n`` (Delétang et al. 2023, "modular arithmetic (simple)")."""

    def string_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        k = (n - 1) // 2  # operators
        digits = torch.randint(0, MODULUS, (count, k + 1), generator=generator)
        operators = torch.randint(0, 3, (count, k), generator=generator)  # +, -, *
        total, term = torch.zeros(count, dtype=torch.long), digits[:, 0]
        for i in range(k):  # left to right: a product is closed when a + or - follows it
            operator, digit = operators[:, i], digits[:, i + 1]
            product = operator == 2
            total = torch.where(product, total, total + term)
            term = torch.where(product, term * digit, torch.where(operator == 0, digit, -digit)) % MODULUS
        value = (total + term) % MODULUS
        string = torch.empty(count, 2 * k + 1, dtype=torch.long)
        string[:, 0::2], string[:, 1::2] = self.tokens("0", digits), self.tokens("+", operators)
        return string, self.tokens("0", value[:, None])


class ReverseString(ChomskyTask, ReverseStringSpec):
    """Context-free. A binary string ``s_1 .. s_n``; the answer is ``s_n .. s_1`` (Delétang et al. 2023)."""

    def string_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        string = self.tokens("0", binary(count, n, generator))
        return string, string.flip(1)


class StackManipulation(ChomskyTask, StackManipulationSpec):
    """Context-free. A binary stack (given bottom to top, ``s ~ Uniform{1..n-1}`` symbols; all ``n`` for ``n =
    1``) followed by ``n - s`` actions ``POP``, ``PUSH0``, ``PUSH1`` (uniform; ``POP`` on an empty stack does
    nothing); the answer is the final stack top to bottom, then ``END``, padded to ``n + 1`` tokens with
    unscored positions (Delétang et al. 2023)."""

    def string_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        size = torch.randint(1, max(2, n), (count, 1), generator=generator) if n > 1 else torch.ones(count, 1)
        bits = binary(count, n, generator)
        actions = torch.randint(0, 3, (count, n), generator=generator)  # POP, PUSH0, PUSH1
        is_stack = torch.arange(n) < size
        string = torch.where(is_stack, self.tokens("0", bits), self.tokens("POP", actions))
        stack, height = torch.zeros(count, n, dtype=torch.long), torch.zeros(count, dtype=torch.long)
        rows = torch.arange(count)
        for t in range(n):
            push = is_stack[:, t] | (actions[:, t] > 0)
            value = torch.where(is_stack[:, t], bits[:, t], actions[:, t] - 1)
            stack[rows, height.clamp(max=n - 1)] = torch.where(push, value, stack[rows, height.clamp(max=n - 1)])
            height = torch.where(push, height + 1, (height - 1).clamp(min=0))
        return string, self.terminated(stack.flip(1), n - height, height, n + 1)


class ModularArithmeticBrackets(ChomskyTask, ModularArithmeticBracketsSpec):
    """Context-free. A bracketed expression of exactly ``n`` tokens over digits ``0..4``, ``+``, ``-`` (also
    unary), ``(``, ``)``; the answer is its value modulo 5. Grammar (Delétang et al. 2023): ``n = 1: d``; ``2:
    -d``; ``3: (d)``; ``4: (-d)``; else ``(E_l o E_r)`` with ``l ~ Uniform{1..n-4}``, ``r = n - 3 - l``, ``o`` in
    ``{+, -}``."""

    def expression(self, n: int, rng: random.Random) -> tuple[list[str], int]:
        if n <= 4:
            digit = rng.randrange(MODULUS)
            value = -digit % MODULUS if n in (2, 4) else digit
            body = ["-", str(digit)] if n in (2, 4) else [str(digit)]
            return (["(", *body, ")"] if n >= 3 else body), value
        left = rng.randint(1, n - 4)
        (a, x), (b, y) = self.expression(left, rng), self.expression(n - 3 - left, rng)
        plus = rng.randrange(2) == 0
        return ["(", *a, "+" if plus else "-", *b, ")"], (x + y if plus else x - y) % MODULUS

    def string_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        rng = random.Random(int(torch.randint(2**62, (1,), generator=generator)))
        examples = [self.expression(n, rng) for _ in range(count)]
        string = torch.tensor([[self.token(s) for s in symbols] for symbols, _ in examples])
        return string, torch.tensor([[self.token(str(value))] for _, value in examples])


class DuplicateString(ChomskyTask, DuplicateStringSpec):
    """Context-sensitive. A binary string ``w``; the answer is ``w w`` (Delétang et al. 2023)."""

    def string_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        string = self.tokens("0", binary(count, n, generator))
        return string, string.repeat(1, 2)


class MissingDuplicate(ChomskyTask, MissingDuplicateSpec):
    """Context-sensitive. ``w w`` for a binary ``w`` of ``n // 2`` symbols with one symbol (uniform position)
    replaced by ``MISSING``, then ``EMPTY`` when ``n`` is odd; the answer is the replaced symbol. For ``n = 1``
    the string is ``1`` and the answer ``1`` (Delétang et al. 2023, "missing duplicate")."""

    def string_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if n == 1:
            one = torch.full((count, 1), self.token("1"))
            return one, one.clone()
        doubled = binary(count, n // 2, generator).repeat(1, 2)
        missing = torch.randint(0, doubled.shape[1], (count, 1), generator=generator)
        answer = self.tokens("0", doubled.gather(1, missing))
        string = self.tokens("0", doubled).scatter(1, missing, self.token("MISSING"))
        return torch.cat([string, torch.full((count, n % 2), self.token("EMPTY"))], dim=1), answer


class OddsFirst(ChomskyTask, OddsFirstSpec):
    """Context-sensitive. A binary string ``s_1 .. s_n``; the answer is ``s_1 s_3 s_5 .. s_2 s_4 ..`` (the paper's
    definition, Delétang et al. 2023; its code emits the even positions first, the same task mirrored)."""

    def string_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        string = self.tokens("0", binary(count, n, generator))
        return string, torch.cat([string[:, 0::2], string[:, 1::2]], dim=1)


class BinaryAddition(ChomskyTask, BinaryAdditionSpec):
    """Context-sensitive. ``a + b`` with ``a``, ``b`` little-endian binary numbers of ``l ~ Uniform{1..n-2}`` and
    ``n - 1 - l`` digits, each uniform in ``1 .. 2^digits - 1``; the answer is ``a + b`` little-endian without
    trailing zeros, then ``END``, padded to ``n + 1`` tokens with unscored positions. For ``n <= 2`` the string is
    one number, uniform in ``0 .. 2^n - 2``, and the answer that number (``0`` for zero) (Delétang et al. 2023)."""

    def string_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        index = torch.arange(n)
        if n <= 2:
            value = torch.randint(0, 2**n - 1, (count, 1), generator=generator)
            bits = (value >> index) & 1
            length = torch.where(value[:, 0] > 1, 2, 1)
            return self.tokens("0", bits), self.terminated(bits, 0 * length, length, n + 1)
        left = torch.randint(1, n - 1, (count, 1), generator=generator)
        right = n - 1 - left
        a, b = self.nonzero(left, n, generator), self.nonzero(right, n, generator)
        shifted = b.gather(1, (index - left - 1).clamp(min=0))  # b's digit j at position left + 1 + j
        plus = self.alphabet.index("+")  # the string as symbol indices: 0, 1 and +
        string = torch.where(index < left, a, torch.where(index == left, plus, shifted))
        total, carry = torch.zeros(count, n, dtype=torch.long), torch.zeros(count, dtype=torch.long)
        for i in range(n):
            bit = a[:, i] + b[:, i] + carry
            total[:, i], carry = bit % 2, bit // 2
        length = n - total.flip(1).argmax(dim=1)  # past the highest 1 (the sum is at least 2)
        return self.tokens("0", string), self.terminated(total, 0 * length, length, n + 1)

    @staticmethod
    def nonzero(digits: Tensor, width: int, generator: torch.Generator) -> Tensor:
        """``(count, width)`` bits, zero from column ``digits_r`` on, uniform over the non-zero numbers."""
        bits = binary(len(digits), width, generator) * (torch.arange(width) < digits)
        while (zero := bits.sum(dim=1) == 0).any():
            redraw = binary(int(zero.sum()), width, generator) * (torch.arange(width) < digits[zero])
            bits[zero] = redraw
        return bits


class BucketSort(ChomskyTask, BucketSortSpec):
    """Context-sensitive. A string over 5 ordered symbols; the answer is the string sorted in increasing order
    (Delétang et al. 2023)."""

    def string_and_answer(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        string = self.tokens("0", torch.randint(0, 5, (count, n), generator=generator))
        return string, string.sort(dim=1).values
