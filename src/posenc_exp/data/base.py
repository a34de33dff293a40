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

    def _layout(self) -> tuple[int, int, int]:
        """``(rank, world, n_full)``: this rank among ``world`` and the epoch's full mini-batches before sharding,
        a multiple of ``world`` (the rest of the samples make the short batch when ``world`` is 1)."""
        rank, world = _rank_and_world() if self.shard else (0, 1)
        return rank, world, self.x.shape[1] // self.batch_size // world * world

    def _batches(self, epoch: int) -> list[Tensor]:
        """The epoch's chunks of sample indices, each ``(R, k, batch_size)``."""
        n = self.x.shape[1]
        if self.shuffle:
            generators = [torch.Generator().manual_seed(seed * 1_000_003 + epoch) for seed in self.seeds]
            order = torch.stack([torch.randperm(n, generator=generator) for generator in generators])
        else:
            order = torch.arange(n).expand(len(self.x), n)
        rank, world, n_full = self._layout()
        full = order[:, : n_full * self.batch_size].reshape(len(order), n_full, self.batch_size)[:, rank::world]
        batches = list(full.split(self.chunk_steps, dim=1))
        rest = order[:, n_full * self.batch_size :]
        if world == 1 and rest.shape[1]:
            batches.append(rest.unsqueeze(1))
        return batches

    def __len__(self) -> int:
        """The chunks of an epoch, as :meth:`_batches` makes them (Lightning asks at every epoch)."""
        rank, world, n_full = self._layout()
        short = world == 1 and self.x.shape[1] % self.batch_size > 0
        return -(-len(range(rank, n_full, world)) // self.chunk_steps) + short

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch_of() if self.epoch_of else self.passes
        self.passes += 1
        replica = torch.arange(len(self.x))[:, None, None]
        for index in self._batches(epoch):
            yield self.x[replica, index].transpose(0, 1), self.y[replica, index].transpose(0, 1)


def mixed_seed(*parts: int) -> int:
    """One 63-bit generator seed from several integers (a data seed, an epoch, a step)."""
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + part) % 2**63
    return seed


LENGTH_SALT = 7_919  # the per-batch lengths' stream, apart from any data seed's


class FreshBatches:
    """Mini-batches generated afresh for every optimizer step, each of one length, grouped into chunks.

    ``sample(count, n, generator)`` returns ``count`` examples ``(x, y)`` of length ``n``. Step ``t`` of epoch
    ``e`` has the length ``n ~ Uniform{1 .. max_length}`` drawn from a generator seeded by ``(e, t)`` alone,
    shared by every replica and every data seed (so the replicas' batches stack, and replica ``k`` sees what the
    single run with seed ``seed + k`` sees), and replica ``r``'s examples from a generator seeded by
    ``(seeds[r], e, t)``. A chunk is ``(xs, ys)``, two sequences of up to ``chunk_steps`` mini-batches
    ``(R, batch_size, width)`` whose widths differ; the module steps through them as through a stacked chunk.
    ``e`` comes from ``epoch_of()`` (the trainer's epoch: a resumed run sees the same batches) or counts the
    passes. Under ``torch.distributed`` rank ``i`` takes the steps ``i, i + world, ..``.
    """

    def __init__(
        self,
        sample: Callable[[int, int, torch.Generator], tuple[Tensor, Tensor]],
        max_length: int,
        batch_size: int,
        steps: int,
        chunk_steps: int = 1,
        seeds: list[int] | None = None,
        epoch_of: Callable[[], int] | None = None,
    ) -> None:
        self.sample, self.max_length, self.batch_size = sample, max_length, batch_size
        self.steps, self.chunk_steps = steps, chunk_steps
        self.seeds = seeds or [0]
        self.epoch_of = epoch_of
        self.passes = 0

    def _steps(self) -> list[int]:
        rank, world = _rank_and_world()
        return list(range(rank, self.steps // world * world, world))

    def __len__(self) -> int:
        return -(-len(self._steps()) // self.chunk_steps)

    def lengths(self, epoch: int) -> Tensor:
        """The length of every step of ``epoch``, ``(steps,)``."""
        generator = torch.Generator().manual_seed(mixed_seed(LENGTH_SALT, epoch))
        return torch.randint(1, self.max_length + 1, (self.steps,), generator=generator)

    def batch(self, epoch: int, step: int, n: int) -> tuple[Tensor, Tensor]:
        """Step ``step``'s mini-batch of length ``n``: ``(R, batch_size, width)`` inputs and targets."""
        pairs = [
            self.sample(self.batch_size, n, torch.Generator().manual_seed(mixed_seed(seed, epoch, step)))
            for seed in self.seeds
        ]
        return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])

    def __iter__(self) -> Iterator[tuple[list[Tensor], list[Tensor]]]:
        epoch = self.epoch_of() if self.epoch_of else self.passes
        self.passes += 1
        lengths, steps = self.lengths(epoch).tolist(), self._steps()
        for start in range(0, len(steps), self.chunk_steps):
            batches = [self.batch(epoch, t, lengths[t]) for t in steps[start : start + self.chunk_steps]]
            yield [x for x, _ in batches], [y for _, y in batches]


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
