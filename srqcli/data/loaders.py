"""Reproducible DataLoaders: the same seed gives the same batches and the same augmentation.

Shuffling uses a ``torch.Generator`` seeded with the run seed, and :class:`SeededSampler`
pairs every training index with an augmentation seed from that generator (applied by
:class:`~srqcli.data.views.SplitView`), so neither depends on torch's global RNG state nor
on the number of workers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, SequentialSampler

from srqcli.data.spec import DatasetBundle
from srqcli.errors import SrqError


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, augmentation_seed)`` for every index of ``sampler``.

    ``set_epoch`` is forwarded to a ``DistributedSampler`` (and is a no-op otherwise) so the
    training loop can call ``loader.sampler.set_epoch(epoch)`` unconditionally.
    """

    def __init__(self, sampler: Sampler[int], generator: torch.Generator) -> None:
        self.sampler = sampler
        self.generator = generator

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        seeds = torch.randint(0, 2**62, (len(self),), generator=self.generator).tolist()
        return zip(self.sampler, seeds)

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)


def _seed_worker(worker_id: int) -> None:
    """Seed ``random`` and numpy in each worker from torch's per-worker seed (itself derived
    from the loader generator), as PyTorch's reproducibility notes recommend, so that a
    transform using either library is reproducible too."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loaders(
    bundle: DatasetBundle, batch_size: int, workers: int, seed: int, distributed: bool = False
) -> tuple[DataLoader, DataLoader]:
    """Train loader (shuffled, seeded augmentation, ``drop_last``) and val loader (in order).

    With ``distributed=True`` (process group already initialized) each process gets its shard
    via ``DistributedSampler``; call ``train_loader.sampler.set_epoch(epoch)`` every epoch.
    The val shards are padded by ``DistributedSampler`` to equal length.
    """
    train_generator = torch.Generator().manual_seed(seed)
    val_generator = torch.Generator().manual_seed(seed)  # separate: evaluating must not shift training
    train_order: Sampler[int]
    val_order: Sampler[int]
    if distributed:
        train_order = DistributedSampler(bundle.train, shuffle=True, seed=seed)
        val_order = DistributedSampler(bundle.val, shuffle=False)
        # Distinct augmentation streams per rank; the shard order itself comes from seed+epoch.
        train_generator.manual_seed(seed + (train_order.rank << 32))
    else:
        train_order = RandomSampler(bundle.train, generator=train_generator)  # type: ignore[arg-type]
        val_order = SequentialSampler(bundle.val)  # type: ignore[arg-type]
    per_process = len(train_order)  # type: ignore[arg-type]
    if per_process < batch_size:
        where = " per process" if distributed else ""
        raise SrqError(
            f"batch size {batch_size} is larger than the {per_process} training samples{where}; "
            "use a smaller batch size or more training data"
        )
    common = {
        "batch_size": batch_size,
        "num_workers": workers,
        "pin_memory": torch.cuda.is_available(),
        "worker_init_fn": _seed_worker,
        "persistent_workers": workers > 0,
    }
    train = DataLoader(
        bundle.train,
        sampler=SeededSampler(train_order, train_generator),
        drop_last=True,
        generator=train_generator,
        **common,
    )
    val = DataLoader(bundle.val, sampler=val_order, drop_last=False, generator=val_generator, **common)
    return train, val
