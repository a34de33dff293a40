"""Tasks trained at one length and evaluated at several: the length-generalization protocol.

A task has a training length ``L`` (``length``: window values for scalar tasks, items for token tasks) and
evaluation factors ``f`` (``eval_factors``, default 1, 1.25, 1.5, 2). It is validated at each length
``round(f * L)`` (halves rounded up) and always at ``L`` itself, with one validation dataloader per length,
in increasing order. The validation loss at ``L`` is the run's ``val/loss``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from posenc_exp.data.base import ChunkedBatches, SyntheticDataModule
from posenc_exp.schemas.data import LengthsSpec, eval_lengths  # torch-free (eval_lengths: exported here too)


class LengthGeneralizationTask(SyntheticDataModule, LengthsSpec):
    """A generated task with a training split and one validation split per evaluation length.

    Subclasses implement :meth:`sample` (``count`` examples of length ``n``) and may override
    :meth:`sample_train` (the default: ``n_train`` examples of the training length) and
    :meth:`input_length` (the model's input length for ``n`` items; the default is ``n``).
    """

    def __init__(self, length: int, eval_factors: Sequence[float], n_train: int, n_val: int, **common: Any) -> None:
        """``common``: the :class:`SyntheticDataModule` arguments (batch_size, chunk_steps, seed, max_positions)."""
        super().__init__(**common)
        self.length = length
        self.eval_factors = list(eval_factors)
        self.n_train, self.n_val = n_train, n_val

    @property
    def train_length(self) -> int:
        return self.length

    @property
    def eval_lengths(self) -> list[int]:
        return eval_lengths(self.length, self.eval_factors)

    def sample(self, count: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``count`` examples ``(x, y)`` of length ``n``."""
        raise NotImplementedError

    def sample_train(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The training split: ``n_train`` examples of the training length."""
        return self.sample(self.n_train, self.length, generator)

    def generate(self, generator: torch.Generator) -> dict[str, tuple[Tensor, Tensor]]:
        splits = {"train": self.sample_train(generator)}
        splits.update({f"val@{n}": self.sample(self.n_val, n, generator) for n in self.eval_lengths})
        splits["val"] = splits[f"val@{self.length}"]
        return splits

    def val_dataloader(self) -> list[ChunkedBatches]:
        """One loader per evaluation length, in the order of :attr:`eval_lengths`."""
        return [self._whole(f"val@{n}") for n in self.eval_lengths]


class WindowTask(LengthGeneralizationTask):
    """A task on windows of scalars, ``x`` ``(count, n)`` float and ``y`` ``(count,)``: what both the
    feed-forward and the attention model read."""
