"""Reproducibility and batching of make_loaders."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import RandomSampler

from srqcli.data import DataSpec, load_datasets, make_loaders
from srqcli.data.loaders import SeededSampler
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


def test_batch_larger_than_dataset(bundle) -> None:
    with pytest.raises(SrqError, match="batch size 500 is larger than the 200 training samples"):
        make_loaders(bundle, 500, 0, seed=0)


def test_shards_together_are_the_single_process_batches(bundle) -> None:
    """Under torchrun the k-th batches of all processes make up the single-process k-th batch
    (same samples, same augmentation), and validation is split without padding."""
    single, single_val = make_loaders(bundle, 32, 0, seed=4)
    shards = [make_loaders(bundle, 32, 0, seed=4, rank=r, world=2) for r in range(2)]
    assert [len(t) for t, _ in shards] == [len(single)] * 2
    for (x, y), (x0, y0), (x1, y1) in zip(single, shards[0][0], shards[1][0]):
        assert x0.shape[0] == x1.shape[0] == 16
        key = lambda xs, ys: sorted(zip(ys.tolist(), xs.flatten(1).sum(1).tolist()))
        assert key(x, y) == key(torch.cat([x0, x1]), torch.cat([y0, y1]))
    val = [torch.cat([yb for _, yb in v]) for _, v in shards]
    assert sum(len(v) for v in val) == len(bundle.val) == len(torch.cat([y for _, y in single_val]))


def test_batch_must_split_evenly_across_processes(bundle) -> None:
    with pytest.raises(SrqError, match="not divisible by the 3 processes"):
        make_loaders(bundle, 32, 0, seed=0, rank=0, world=3)


def test_replay_repeats_a_pass_and_skips_what_was_trained(bundle) -> None:
    """A resumed run redraws the interrupted pass from its start state and skips its first
    batches without loading them; what follows, including the next pass, is unchanged."""
    train, _ = make_loaders(bundle, 32, 0, seed=6)
    first = list(train)  # whole passes, as training runs them
    second = batches(train, count=2)
    resumed, _ = make_loaders(bundle, 32, 0, seed=99)  # another start: the replay must not care
    fresh, _ = make_loaders(bundle, 32, 0, seed=6)
    batches(fresh, count=1)
    resumed.sampler.replay(fresh.sampler.pass_state, skip=2 * 32)
    assert same(list(resumed), first[2:])
    assert same(batches(resumed, count=2), second)


def test_single_process_passes_are_the_plain_seeded_order() -> None:
    """Sharding support must not change the single-process stream: seeds then a permutation
    per pass, with the inner sampler run to exhaustion (it draws once more at its end)."""
    n, reference = 50, []
    g = torch.Generator().manual_seed(5)
    for _ in range(2):
        seeds = torch.randint(0, 2**62, (n,), generator=g).tolist()
        reference.append(list(zip(RandomSampler(range(n), generator=g), seeds)))
    g = torch.Generator().manual_seed(5)
    sampler = SeededSampler(RandomSampler(range(n), generator=g), g)
    assert [list(sampler), list(sampler)] == reference
