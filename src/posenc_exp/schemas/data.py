"""Schemas of ``conf/data``: the tasks (``posenc_exp.data``), and their specs.

A task's spec (``...Spec`` below, torch-free) holds its config checks (``check_config``) and what the
relations between components read: ``task`` (the kind of targets), ``input_length`` and ``longest_input``
(which ``data.max_positions`` defaults to, through the resolver ``posenc.max_positions``). The task classes
of ``posenc_exp.data`` inherit their spec, so that a task subclassed by a user (docs/extending.md) keeps its
base's checks; ``TARGETS`` lists the spec of each built-in task for the checks, which run before torch is
imported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from omegaconf import MISSING

from posenc_exp.checks import is_number, require_choice, require_int, require_memory, require_number
from posenc_exp.errors import ConfigError

PAD, SEP, FIRST_SYMBOL = 0, 1, 2  # the token tasks' vocabulary: padding, separator, then the symbols


def eval_lengths(length: int, factors: Sequence[float]) -> list[int]:
    """``sorted({L} | {floor(f L + 1/2) for f in factors})``, each at least 1: the lengths a task trained at
    ``L`` (``data.length``) is evaluated at (``data.eval_factors``)."""
    return sorted({length, *(max(1, math.floor(f * length + 0.5)) for f in factors)})


def is_stationary(coefficients: Sequence[float]) -> bool:
    """Whether AR coefficients ``a_1..a_p`` give a stationary process: every root of the characteristic
    polynomial ``z^p - a_1 z^(p-1) - ... - a_p`` lies strictly inside the unit circle (Box & Jenkins)."""
    import numpy as np

    roots = np.roots([1.0, *(-float(a) for a in coefficients)])
    return bool(np.all(np.abs(roots) < 1.0))


class SyntheticSpec:
    """Every task (``posenc_exp.data.SyntheticDataModule``). ``task``: ``"regression"`` (scalar targets,
    MSE), ``"tokens"`` (per-position token targets) or ``"lm"`` (language modelling, every position a
    next-token target: loss, bits per byte, perplexity)."""

    task: ClassVar[str] = "regression"

    @classmethod
    def check_config(cls, data: Any) -> None:
        """The ``data`` config's ranges, each as a ``ConfigError`` naming the key; subclasses add their own
        (and call this). Called on the resolved config before anything is built or written."""
        require_int("data.batch_size", data.batch_size, 1)
        require_int("data.chunk_steps", data.chunk_steps, 1)
        require_int("data.seed", data.seed, 0, 2**32 - 1)

    @classmethod
    def check_causal(cls, data: Any, causal: Any, name: str) -> None:
        """A ``ConfigError`` when the task cannot be learnt by a model with ``model.causal=causal`` (``name``: the
        option, e.g. ``data=copy``): token and language-modelling tasks are trained with teacher forcing (the
        answer tokens are inputs), so a position must not see the next; subclasses with other formats override."""
        if cls.task in ("tokens", "lm") and causal is not True:
            raise ConfigError(
                f"{name} is trained with teacher forcing (the answer tokens are inputs) and needs model.causal=true"
            )


class RandomSpec(SyntheticSpec):
    """``posenc_exp.data.RandomWindows``."""

    @classmethod
    def check_config(cls, data: Any) -> None:
        """``length >= 1``, ``xlen >= length + 2``, a ``val_fraction`` in (0, 1) that leaves both splits
        non-empty, and the series and its windows (``(xlen - C) * C`` float32 values) in memory."""
        super().check_config(data)
        require_int("data.length", data.length, 1)
        length = data.length
        require_int(
            "data.xlen",
            data.xlen,
            length + 2,
            allowed=f"an integer >= data.length + 2 = {length + 2} (a window for each split)",
        )
        require_number("data.val_fraction", data.val_fraction, 0, 1, "a fraction strictly between 0 and 1")
        n = data.xlen - length
        n_val = round(data.val_fraction * n)
        if not 1 <= n_val < n:
            raise ConfigError(
                f"data.val_fraction={data.val_fraction} of the {n} windows (data.xlen - data.length) is "
                f"{n_val}, leaving the {'validation' if n_val < 1 else 'training'} split empty: expected a "
                f"fraction that gives both splits at least one window (at least {1 / n:.3g} and at most "
                f"{1 - 1 / n:.3g} here)"
            )
        require_memory(f"data.xlen={data.xlen} data.length={length}", 4 * (data.xlen + 2 * n * length), "the windows")


class LengthsSpec(SyntheticSpec):
    """``posenc_exp.data.LengthGeneralizationTask``: trained at ``length``, evaluated at ``eval_lengths``."""

    @staticmethod
    def input_length(n: int) -> int:
        """Length of the model's input for an example of ``n`` items."""
        return n

    @classmethod
    def longest_input(cls, length: int, factors: Sequence[float]) -> int:
        """The longest input over the evaluation lengths: what ``data.max_positions`` defaults to."""
        return cls.input_length(max(eval_lengths(length, factors)))

    @classmethod
    def check_config(cls, data: Any) -> None:
        """``length``, ``n_train``, ``n_val`` >= 1, finite ``eval_factors`` > 0, and the splits in memory: their
        inputs and targets, 8 bytes a position (int64 tokens; float32 windows need less). Subclasses add their
        own checks (and call this)."""
        super().check_config(data)
        require_int("data.length", data.length, 1)
        factors = list(data.eval_factors)
        if not factors or not all(is_number(f) and math.isfinite(f) and f > 0 for f in factors):
            raise ConfigError(
                f"data.eval_factors={factors} is not allowed: expected a non-empty list of finite factors > 0"
            )
        if "n_train" not in data:  # a task that reads its examples from elsewhere (data=text) sizes them itself
            return
        require_int("data.n_train", data.n_train, 1)
        require_int("data.n_val", data.n_val, 1)
        lengths = eval_lengths(data.length, factors)
        positions = cls.train_positions(data) + data.n_val * sum(map(cls.input_length, lengths))
        keys = f"data.n_train={data.n_train} data.n_val={data.n_val} data.length={data.length}"
        require_memory(f"{keys} data.eval_factors={factors}", 2 * 8 * positions, "the training and validation splits")

    @classmethod
    def train_positions(cls, data: Any) -> int:
        """The positions of the training data held in memory at once: the whole training split."""
        return data.n_train * cls.input_length(data.length)


class LagSpec(LengthsSpec):
    """``posenc_exp.data.LagWindows``."""

    @classmethod
    def check_config(cls, data: Any) -> None:
        super().check_config(data)
        require_int("data.lag", data.lag, 1, data.length, f"an integer, 1 <= lag <= data.length={data.length}")


class ARSpec(LengthsSpec):
    """``posenc_exp.data.AutoregressiveWindows``."""

    @classmethod
    def check_config(cls, data: Any) -> None:
        super().check_config(data)
        coefficients = list(data.coefficients)
        finite = all(is_number(a) and math.isfinite(a) for a in coefficients)
        if not coefficients or not finite or not is_stationary(coefficients):
            raise ConfigError(
                f"data.coefficients={coefficients} is not allowed: expected a stationary AR(p) "
                "(roots of z^p - a_1 z^(p-1) - ... - a_p inside the unit circle), e.g. [0.5, -0.3]"
            )
        if data.length < len(coefficients):
            raise ConfigError(
                f"data.length={data.length} is shorter than the AR order p={len(coefficients)}: the window "
                "must hold the p values that predict the next one"
            )
        require_number("data.sigma", data.sigma, low=0, allowed="a finite noise level > 0")
        require_int("data.burn_in", data.burn_in, 0, allowed="an integer >= 0")
        lengths = eval_lengths(data.length, data.eval_factors)
        series = data.n_train + data.n_val * len(lengths)
        require_memory(
            f"data.burn_in={data.burn_in}", 8 * series * (data.burn_in + max(lengths) + 1), "the simulated series"
        )


class TokensSpec(LengthsSpec):
    """``posenc_exp.data.TokenTask`` (copy, reverse, sort): ``tokens_per_item`` and ``extra_tokens`` give the
    model's input length ``tokens_per_item * n + extra_tokens`` for ``n`` items."""

    task: ClassVar[str] = "tokens"
    tokens_per_item: ClassVar[int] = 2
    extra_tokens: ClassVar[int] = 0

    @classmethod
    def input_length(cls, n: int) -> int:  # type: ignore[override]
        return cls.tokens_per_item * n + cls.extra_tokens

    @classmethod
    def check_config(cls, data: Any) -> None:
        super().check_config(data)
        require_int(
            "data.vocab_size",
            data.vocab_size,
            FIRST_SYMBOL + 2,
            allowed=f"an integer >= {FIRST_SYMBOL + 2} (PAD, SEP and at least two symbols)",
        )
        require_int(
            "data.min_length",
            data.min_length,
            1,
            data.length,
            f"an integer, 1 <= min_length <= data.length={data.length}",
        )


class RecallSpec(TokensSpec):
    """``posenc_exp.data.AssociativeRecall``: ``k_1 v_1 .. k_n v_n SEP q``."""

    extra_tokens: ClassVar[int] = 2

    @classmethod
    def check_config(cls, data: Any) -> None:
        super().check_config(data)
        n_keys, longest = (data.vocab_size - FIRST_SYMBOL) // 2, max(eval_lengths(data.length, data.eval_factors))
        if longest > n_keys:
            raise ConfigError(
                f"data.vocab_size={data.vocab_size} gives {n_keys} distinct keys, fewer than the {longest} pairs "
                f"of the longest evaluation (data.length={data.length} x data.eval_factors): raise "
                f"data.vocab_size to at least {2 * longest + FIRST_SYMBOL}"
            )


class TextSpec(LengthsSpec):
    """``posenc_exp.data.TextBytes``: language modelling on bytes."""

    task: ClassVar[str] = "lm"
    vocab_size: ClassVar[int] = 256  # bytes

    @classmethod
    def check_config(cls, data: Any) -> None:
        """Bytes (``vocab_size`` 256), a ``val_fraction`` in (0, 1), ``max_bytes`` and ``val_bytes`` >= 2, and
        the validation windows of every evaluation length in memory (8 bytes a position, input and target)."""
        super().check_config(data)
        require_number("data.val_fraction", data.val_fraction, 0, 1, "a fraction strictly between 0 and 1")
        if data.vocab_size != cls.vocab_size:
            raise ConfigError(f"data.vocab_size={data.vocab_size} is not allowed: bytes need exactly {cls.vocab_size}")
        for key in ("max_bytes", "val_bytes"):
            value = data[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 2:
                raise ConfigError(f"data.{key}={value} is not allowed: expected an integer >= 2 (bytes)")
        lengths = eval_lengths(data.length, data.eval_factors)
        require_memory(
            f"data.val_bytes={data.val_bytes}", 2 * 8 * data.val_bytes * len(lengths), "the validation windows"
        )
        require_memory(f"data.max_bytes={data.max_bytes}", 2 * 8 * data.max_bytes, "the training bytes")


FORMATS = ("encoder", "causal")  # the Chomsky tasks' data.format


class ChomskySpec(LengthsSpec):
    """``posenc_exp.data.ChomskyTask``, the Chomsky-hierarchy tasks of Delétang et al., "Neural Networks and the
    Chomsky Hierarchy", ICLR 2023: a fixed ``alphabet`` (``data.vocab_size = 2 + len(alphabet)``), the ``level``
    of the hierarchy, and ``answer_length(n)`` answer tokens for ``n`` input tokens; both formats feed
    ``input_length(n) = n + answer_length(n)`` positions."""

    task: ClassVar[str] = "tokens"
    alphabet: ClassVar[tuple[str, ...]] = ()
    level: ClassVar[str] = ""

    @staticmethod
    def answer_length(n: int) -> int:
        """Tokens of the answer to ``n`` input tokens."""
        return 1

    @classmethod
    def input_length(cls, n: int) -> int:
        """Both formats feed ``n + answer_length(n)`` positions (causal: ``n + 1 + A - 1``)."""
        return n + cls.answer_length(n)

    @classmethod
    def check_config(cls, data: Any) -> None:
        """The length-generalization checks, a known ``format``, and ``vocab_size`` exactly ``2 + len(alphabet)``."""
        super().check_config(data)
        require_choice("data.format", data.format, FORMATS)
        vocab = FIRST_SYMBOL + len(cls.alphabet)
        require_int("data.vocab_size", data.vocab_size, vocab, vocab, f"{vocab} (PAD, SEP and the task's symbols)")

    @classmethod
    def train_positions(cls, data: Any) -> int:
        """One chunk of fresh mini-batches at the longest training length (nothing else is kept)."""
        return min(data.n_train, data.chunk_steps * data.batch_size) * cls.input_length(data.length)

    @classmethod
    def check_causal(cls, data: Any, causal: Any, name: str) -> None:
        """``data.format=causal`` (teacher forcing) needs ``model.causal=true``, ``encoder`` needs ``false``."""
        if data.get("format") not in FORMATS:
            require_choice("data.format", data.get("format"), FORMATS)
        if data.format == "causal" and causal is not True:
            raise ConfigError(
                f"{name} with data.format=causal is trained with teacher forcing (the answer tokens are inputs) "
                "and needs model.causal=true (or data.format=encoder with model.causal=false)"
            )
        if data.format == "encoder" and causal is not False:
            raise ConfigError(
                f"{name} with data.format=encoder reads the answer from output positions that attend to the whole "
                "input and needs model.causal=false (or data.format=causal with model.causal=true)"
            )


class EvenPairsSpec(ChomskySpec):
    """``posenc_exp.data.EvenPairs``."""

    alphabet: ClassVar[tuple[str, ...]] = ("a", "b", "0", "1")
    level: ClassVar[str] = "regular"


class ParitySpec(ChomskySpec):
    """``posenc_exp.data.Parity``."""

    alphabet: ClassVar[tuple[str, ...]] = ("0", "1")
    level: ClassVar[str] = "regular"


class CycleNavigationSpec(ChomskySpec):
    """``posenc_exp.data.CycleNavigation``."""

    alphabet: ClassVar[tuple[str, ...]] = ("left", "stay", "right", "0", "1", "2", "3", "4")
    level: ClassVar[str] = "regular"


class ModularArithmeticSpec(ChomskySpec):
    """``posenc_exp.data.ModularArithmetic``."""

    alphabet: ClassVar[tuple[str, ...]] = ("0", "1", "2", "3", "4", "+", "-", "*")
    level: ClassVar[str] = "regular"


class ReverseStringSpec(ChomskySpec):
    """``posenc_exp.data.ReverseString``."""

    alphabet: ClassVar[tuple[str, ...]] = ("0", "1")
    level: ClassVar[str] = "context-free"

    @staticmethod
    def answer_length(n: int) -> int:
        return n


class StackManipulationSpec(ChomskySpec):
    """``posenc_exp.data.StackManipulation``."""

    alphabet: ClassVar[tuple[str, ...]] = ("0", "1", "POP", "PUSH0", "PUSH1", "END")
    level: ClassVar[str] = "context-free"

    @staticmethod
    def answer_length(n: int) -> int:
        return n + 1


class ModularArithmeticBracketsSpec(ChomskySpec):
    """``posenc_exp.data.ModularArithmeticBrackets``."""

    alphabet: ClassVar[tuple[str, ...]] = ("0", "1", "2", "3", "4", "+", "-", "(", ")")
    level: ClassVar[str] = "context-free"


class DuplicateStringSpec(ChomskySpec):
    """``posenc_exp.data.DuplicateString``."""

    alphabet: ClassVar[tuple[str, ...]] = ("0", "1")
    level: ClassVar[str] = "context-sensitive"

    @staticmethod
    def answer_length(n: int) -> int:
        return 2 * n


class MissingDuplicateSpec(ChomskySpec):
    """``posenc_exp.data.MissingDuplicate``."""

    alphabet: ClassVar[tuple[str, ...]] = ("0", "1", "MISSING", "EMPTY")
    level: ClassVar[str] = "context-sensitive"


class OddsFirstSpec(ChomskySpec):
    """``posenc_exp.data.OddsFirst``."""

    alphabet: ClassVar[tuple[str, ...]] = ("0", "1")
    level: ClassVar[str] = "context-sensitive"

    @staticmethod
    def answer_length(n: int) -> int:
        return n


class BinaryAdditionSpec(ChomskySpec):
    """``posenc_exp.data.BinaryAddition``."""

    alphabet: ClassVar[tuple[str, ...]] = ("0", "1", "+", "END")
    level: ClassVar[str] = "context-sensitive"

    @staticmethod
    def answer_length(n: int) -> int:
        return n + 1


class BucketSortSpec(ChomskySpec):
    """``posenc_exp.data.BucketSort``."""

    alphabet: ClassVar[tuple[str, ...]] = ("0", "1", "2", "3", "4")
    level: ClassVar[str] = "context-sensitive"

    @staticmethod
    def answer_length(n: int) -> int:
        return n


@dataclass
class Task:
    """Every task: batching, its data seed and the longest input the model is fed."""

    _target_: str = MISSING
    batch_size: int = MISSING
    chunk_steps: int = MISSING
    seed: int = MISSING
    max_positions: int = MISSING


@dataclass
class Random(Task):
    length: int = MISSING
    xlen: int = MISSING
    val_fraction: float = MISSING


@dataclass
class Lengths(Task):
    """Tasks trained at ``length`` and evaluated at ``round(f * length)`` for ``f`` in ``eval_factors``."""

    length: int = MISSING
    eval_factors: list[float] = field(default_factory=lambda: MISSING)  # type: ignore[arg-type]
    n_train: int = MISSING
    n_val: int = MISSING


@dataclass
class Lag(Lengths):
    lag: int = MISSING


@dataclass
class AR(Lengths):
    coefficients: list[float] = field(default_factory=lambda: MISSING)  # type: ignore[arg-type]
    sigma: float = MISSING
    burn_in: int = MISSING


@dataclass
class Tokens(Lengths):
    min_length: int = MISSING
    vocab_size: int = MISSING


@dataclass
class Chomsky(Lengths):
    """The Chomsky-hierarchy tasks (``posenc_exp.data.chomsky``), in ``conf/data/_chomsky.yaml``."""

    format: str = MISSING
    vocab_size: int = MISSING


@dataclass
class Text(Task):
    """Byte-level language modelling on files (``posenc_exp.data.TextBytes``)."""

    corpus: Optional[str] = MISSING  # noqa: UP045 - OmegaConf 2.3 reads typing.Optional, not X | None
    length: int = MISSING
    eval_factors: list[float] = field(default_factory=lambda: MISSING)  # type: ignore[arg-type]
    val_fraction: float = MISSING
    max_bytes: int = MISSING
    val_bytes: int = MISSING
    vocab_size: int = MISSING


SCHEMAS = {
    "random": Random,
    "lag": Lag,
    "ar": AR,
    "tokens": Tokens,
    "chomsky": Chomsky,
    "text": Text,  # in conf/data/_tokens.yaml, the base of copy, reverse, sort and recall
}

TARGETS = {
    "posenc_exp.data.RandomWindows": RandomSpec,
    "posenc_exp.data.LagWindows": LagSpec,
    "posenc_exp.data.AutoregressiveWindows": ARSpec,
    "posenc_exp.data.Copy": TokensSpec,
    "posenc_exp.data.Reverse": TokensSpec,
    "posenc_exp.data.Sort": TokensSpec,
    "posenc_exp.data.AssociativeRecall": RecallSpec,
    "posenc_exp.data.TextBytes": TextSpec,
    "posenc_exp.data.EvenPairs": EvenPairsSpec,
    "posenc_exp.data.Parity": ParitySpec,
    "posenc_exp.data.CycleNavigation": CycleNavigationSpec,
    "posenc_exp.data.ModularArithmetic": ModularArithmeticSpec,
    "posenc_exp.data.ReverseString": ReverseStringSpec,
    "posenc_exp.data.StackManipulation": StackManipulationSpec,
    "posenc_exp.data.ModularArithmeticBrackets": ModularArithmeticBracketsSpec,
    "posenc_exp.data.DuplicateString": DuplicateStringSpec,
    "posenc_exp.data.MissingDuplicate": MissingDuplicateSpec,
    "posenc_exp.data.OddsFirst": OddsFirstSpec,
    "posenc_exp.data.BinaryAddition": BinaryAdditionSpec,
    "posenc_exp.data.BucketSort": BucketSortSpec,
}
