"""In-memory batching shared by every task: no per-sample Python, no DataLoader workers.

Tiny models are bound by per-step framework overhead, so the training loader yields *chunks*: a stack of
up to ``chunk_steps`` mini-batches, ``(k, R, batch_size, ...)``. The LightningModule takes one optimizer step
per mini-batch inside a single ``training_step``, so Lightning's per-batch machinery (fetching, batch hooks,
logging, progress bar) runs once per chunk.

Every split carries a leading replica axis ``R`` (see ``posenc_exp.models.layers``): 1 when the replicas
share their data (the data seed does not depend on the run's seed), else one generated data set per replica,
each from its own data seed, each shuffled by its own seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor

from posenc_exp.schemas.data import SyntheticSpec


def _rank_and_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ChunkedBatches:
    """Shuffled mini-batches of in-memory tensors ``x``, ``y`` ``(R, n, ...)``, grouped into chunks of ``chunk_steps``.

    Each item is ``(x, y)`` with a leading chunk dimension: ``x`` is ``(k, R, batch_size, ...)``. The full
    mini-batches of an epoch come first; a final short mini-batch (``n mod batch_size`` samples), if any,
    comes last as a chunk of one. The permutation of replica ``r`` in epoch ``e`` depends only on
    ``(seeds[r], e)``; ``e`` comes
    from ``epoch_of()`` (the trainer's epoch, so a resumed run sees the same batches as an uninterrupted
    one) or, without it, counts the passes over the data. Under ``torch.distributed`` each rank takes every
    ``world_size``-th full mini-batch and the short one is dropped, so ranks step in lockstep; with
    ``shard=False`` every rank sees every batch (the validation splits: each rank evaluates the whole split).
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        chunk_steps: int = 1,
        shuffle: bool = True,
        seeds: list[int] | None = None,
        epoch_of: Callable[[], int] | None = None,
        shard: bool = True,
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = min(batch_size, x.shape[1])
        self.chunk_steps = chunk_steps
        self.shuffle = shuffle
        self.seeds = seeds or [0] * len(x)
        self.epoch_of = epoch_of
        self.shard = shard
        self.passes = 0

    def _batches(self, epoch: int) -> list[Tensor]:
        """The epoch's chunks of sample indices, each ``(R, k, batch_size)``."""
        n = self.x.shape[1]
        if self.shuffle:
            generators = [torch.Generator().manual_seed(seed * 1_000_003 + epoch) for seed in self.seeds]
            order = torch.stack([torch.randperm(n, generator=generator) for generator in generators])
        else:
            order = torch.arange(n).expand(len(self.x), n)
        rank, world = _rank_and_world() if self.shard else (0, 1)
        n_full = n // self.batch_size // world * world
        full = order[:, : n_full * self.batch_size].reshape(len(order), n_full, self.batch_size)[:, rank::world]
        batches = list(full.split(self.chunk_steps, dim=1))
        rest = order[:, n_full * self.batch_size :]
        if world == 1 and rest.shape[1]:
            batches.append(rest.unsqueeze(1))
        return batches

    def __len__(self) -> int:
        return len(self._batches(0))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch_of() if self.epoch_of else self.passes
        self.passes += 1
        replica = torch.arange(len(self.x))[:, None, None]
        for index in self._batches(epoch):
            yield self.x[replica, index].transpose(0, 1), self.y[replica, index].transpose(0, 1)


class SyntheticDataModule(L.LightningDataModule, SyntheticSpec):
    """A generated, seeded, in-memory task.

    Subclasses implement :meth:`generate`, returning ``{"train": (x, y), "val": (x, y), ...}``; :meth:`setup`
    stacks one such data set per data seed into ``splits`` with a leading replica axis. The data seed is the
    module's own, separate from the initialisation seed; :meth:`replicate` gives each replica its own.
    ``max_positions`` is the longest sequence the model will be fed, training or evaluation; encodings with a
    table size it by this. Validation
    loaders yield one whole split as a single batch (with a chunk dimension of one); tasks evaluated at
    several lengths (``posenc_exp.data.lengths``) have one validation loader per length.
    """

    vocab_size: int | None = None  # token tasks: the number of token ids

    @property
    def train_length(self) -> int:
        """The training length, in the task's own unit (window values, or items for token tasks)."""
        return self.max_positions

    @property
    def eval_lengths(self) -> list[int]:
        """The lengths validated, one validation dataloader each, in order (here: the training length)."""
        return [self.train_length]

    def __init__(self, batch_size: int, chunk_steps: int, seed: int, max_positions: int) -> None:
        super().__init__()
        self.max_positions = max_positions
        self.batch_size = batch_size
        self.chunk_steps = chunk_steps
        self.seed = seed
        self.seeds = [seed]
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}

    def replicate(self, seeds: list[int]) -> None:
        """One data set per replica, generated and shuffled with ``seeds[r]`` (before :meth:`setup`)."""
        self.seeds = list(seeds)

    def generate(self, generator: torch.Generator) -> dict[str, tuple[Tensor, Tensor]]:
        raise NotImplementedError

    def provenance(self) -> dict[str, Any]:
        """What the data was made from, beyond the config, for ``metrics.json`` and the HParams tab (after
        setup): nothing for a generated task (its config and seed say it all); a text corpus's fingerprint."""
        return {}

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            sets = [self.generate(torch.Generator().manual_seed(seed)) for seed in self.seeds]
            self.splits = {
                name: (torch.stack([s[name][0] for s in sets]), torch.stack([s[name][1] for s in sets]))
                for name in sets[0]
            }

    def train_dataloader(self) -> ChunkedBatches:
        x, y = self.splits["train"]
        epoch_of = (lambda: self.trainer.current_epoch) if self.trainer else None
        return ChunkedBatches(x, y, self.batch_size, self.chunk_steps, seeds=self.seeds, epoch_of=epoch_of)

    def _whole(self, split: str) -> ChunkedBatches:
        x, y = self.splits[split]
        return ChunkedBatches(x, y, x.shape[1], shuffle=False, shard=False)

    def val_dataloader(self) -> ChunkedBatches:
        return self._whole("val")
