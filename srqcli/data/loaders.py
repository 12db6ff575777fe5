"""Reproducible DataLoaders: the same seed gives the same batches and the same augmentation.

Shuffling uses a ``torch.Generator`` seeded with the run seed, and :class:`SeededSampler`
pairs every training index with an augmentation seed from that generator (applied by
:class:`~srqcli.data.views.SplitView`), so neither depends on torch's global RNG state nor
on the number of workers.

Under torchrun every process draws the same global order and takes every ``world``-th sample
of it (``rank``, ``rank + world``, …) with a per-process batch of ``batch_size / world``: the
k-th batches of all processes together are exactly the k-th batch of a single-process run, so
``batch_size`` means the global batch and a recipe trains on the same data at any scale.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler, SequentialSampler

from srqcli.data.spec import DatasetBundle
from srqcli.errors import SrqError


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, augmentation_seed)`` for every index of ``sampler`` (this process's share).

    Each pass draws its seeds, then its order, from ``generator``. :attr:`pass_state` is the
    generator state that pass started from: with :meth:`replay`, a resumed run redraws the
    interrupted pass exactly and skips what was already trained on, without loading it.
    """

    def __init__(self, sampler: Sampler[int], generator: torch.Generator, rank: int = 0,
                 world: int = 1) -> None:
        self.sampler = sampler
        self.generator = generator
        self.rank, self.world = rank, world
        self.pass_state: torch.Tensor | None = None
        self._replay: tuple[torch.Tensor, int] | None = None

    def __len__(self) -> int:
        return len(self.sampler) // self.world  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        skip = 0
        if self._replay is not None:
            state, skip = self._replay
            self.generator.set_state(state)
            self._replay = None
        self.pass_state = self.generator.get_state()
        total = len(self.sampler)  # type: ignore[arg-type]
        seeds = torch.randint(0, 2**62, (total,), generator=self.generator).tolist()
        used = len(self) * self.world
        # Run the inner sampler to its end even past ``used``: it draws from the generator once
        # more when exhausted, and the next pass must start from the same state as always.
        mine = (pair for i, pair in enumerate(zip(self.sampler, seeds))
                if i < used and i % self.world == self.rank)
        return itertools.islice(mine, skip, None)

    def replay(self, pass_state: torch.Tensor, skip: int) -> None:
        """Make the next pass repeat the one that started from ``pass_state``, minus its first
        ``skip`` samples (of this process)."""
        self._replay = (pass_state, skip)


def _seed_worker(worker_id: int) -> None:
    """Seed ``random`` and numpy in each worker from torch's per-worker seed (itself derived
    from the loader generator), as PyTorch's reproducibility notes recommend, so that a
    transform using either library is reproducible too."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loaders(
    bundle: DatasetBundle, batch_size: int, workers: int, seed: int, rank: int = 0, world: int = 1
) -> tuple[DataLoader, DataLoader]:
    """Train loader (shuffled, seeded augmentation, ``drop_last``) and val loader (in order).

    ``batch_size`` is the global batch; with ``world`` processes each loads ``batch_size /
    world`` per step. Validation samples are dealt out the same way (every ``world``-th), with
    no padding, so metrics summed over processes count every sample exactly once.
    """
    if batch_size % world:
        raise SrqError(f"batch size {batch_size} is not divisible by the {world} processes; "
                       "use a multiple of the process count")
    local_batch = batch_size // world
    train_generator = torch.Generator().manual_seed(seed)
    val_generator = torch.Generator().manual_seed(seed)  # separate: evaluating must not shift training
    train_sampler = SeededSampler(RandomSampler(bundle.train, generator=train_generator),  # type: ignore[arg-type]
                                  train_generator, rank, world)
    val_order = SequentialSampler(bundle.val) if world == 1 else range(rank, len(bundle.val), world)  # type: ignore[arg-type]
    if len(train_sampler) < local_batch:
        where = " per process" if world > 1 else ""
        raise SrqError(
            f"batch size {local_batch} is larger than the {len(train_sampler)} training samples{where}; "
            "use a smaller batch size or more training data"
        )
    common = {
        "batch_size": local_batch,
        "num_workers": workers,
        "pin_memory": torch.cuda.is_available(),
        "worker_init_fn": _seed_worker,
        "persistent_workers": workers > 0,
    }
    train = DataLoader(
        bundle.train,
        sampler=train_sampler,
        drop_last=True,
        generator=train_generator,
        **common,
    )
    val = DataLoader(bundle.val, sampler=val_order, drop_last=False, generator=val_generator, **common)
    return train, val
