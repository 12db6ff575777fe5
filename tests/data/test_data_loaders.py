"""Reproducibility and batching of make_loaders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from srqcli.data import DataSpec, load_datasets, make_loaders
from srqcli.errors import SrqError


@pytest.fixture(scope="module")
def bundle():
    return load_datasets(DataSpec("example", train_limit=200, val_limit=70))


def batches(loader, count: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for x, y in loader:
        out.append((x, y))
        if len(out) == count:
            break
    return out


def same(a, b) -> bool:
    return all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


def test_same_seed_same_batches_regardless_of_global_rng(bundle) -> None:
    torch.manual_seed(1)
    first = batches(make_loaders(bundle, 32, 0, seed=7)[0])
    torch.manual_seed(2)
    second = batches(make_loaders(bundle, 32, 0, seed=7)[0])
    assert same(first, second)
    assert not same(first, batches(make_loaders(bundle, 32, 0, seed=8)[0]))


def test_workers_do_not_change_batches(bundle) -> None:
    in_process = batches(make_loaders(bundle, 50, 0, seed=3)[0], count=2)
    with_workers = batches(make_loaders(bundle, 50, 2, seed=3)[0], count=2)
    assert same(in_process, with_workers)


def test_epochs_differ_but_replay_identically(bundle) -> None:
    def two_epochs():
        train, _ = make_loaders(bundle, 32, 0, seed=5)
        return batches(train, 1) + batches(train, 1)

    run1, run2 = two_epochs(), two_epochs()
    assert same(run1, run2)
    assert not torch.equal(run1[0][1], run1[1][1])


def test_train_drops_last_and_val_keeps_order(bundle) -> None:
    train, val = make_loaders(bundle, 64, 0, seed=0)
    assert len(train) == 200 // 64
    assert all(x.shape[0] == 64 for x, _ in train)
    labels = torch.cat([y for _, y in val])
    assert labels.tolist() == [bundle.val[i][1] for i in range(len(bundle.val))]
    train.sampler.set_epoch(3)  # callable unconditionally, a no-op without distribution


def test_batch_larger_than_dataset(bundle) -> None:
    with pytest.raises(SrqError, match="batch size 500 is larger than the 200 training samples"):
        make_loaders(bundle, 500, 0, seed=0)


def test_distributed_samplers(bundle, tmp_path: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        train, val = make_loaders(bundle, 32, 0, seed=4, distributed=True)
        assert isinstance(train.sampler.sampler, DistributedSampler)
        assert isinstance(val.sampler, DistributedSampler) and not val.sampler.shuffle
        epoch0 = batches(train, 1)
        train.sampler.set_epoch(1)
        epoch1 = batches(train, 1)
        assert not torch.equal(epoch0[0][1], epoch1[0][1])
        labels = torch.cat([y for _, y in val])
        assert labels.tolist() == [bundle.val[i][1] for i in range(len(bundle.val))]
    finally:
        dist.destroy_process_group()
