"""The collectives srq uses under torchrun, on two real gloo processes."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from srqcli.errors import SrqError
from srqcli.train import distributed


def _worker(rank: int, store: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        out = {}
        # Calibration samples of different lengths and shapes, concatenated in rank order.
        out["gather"] = distributed.gather_cat(torch.full((rank + 1,), float(rank))).tolist()
        out["gather2d"] = distributed.gather_cat(torch.full((2, rank + 1), float(rank))).shape
        out["sum"] = distributed.sum_across([1.0, rank])
        out["agree"] = distributed.agree(rank == 0)
        bn = nn.BatchNorm1d(2)
        bn.running_mean.fill_(float(rank))
        distributed.average_batchnorm_(bn)
        out["bn"] = bn.running_mean.tolist()
        out["value"] = distributed.on_main(lambda: "from rank 0")

        def fail() -> None:
            raise SrqError("output folder is not empty")

        try:
            distributed.on_main(fail)
        except SrqError as exc:
            out["error"] = str(exc)
        out["same"] = distributed.check_identical([torch.ones(3)], "x")
        try:
            distributed.check_identical([torch.full((3,), float(rank))], "calibrated quantizers")
        except RuntimeError as exc:
            out["differ"] = str(exc)
        results[rank] = out
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_collectives_on_two_processes(tmp_path) -> None:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(str(tmp_path / "store"), results), nprocs=2)
        r0, r1 = results[0], results[1]
    for r in (r0, r1):
        assert r["gather"] == [0.0, 1.0, 1.0]
        assert tuple(r["gather2d"]) == (2, 3)
        assert r["sum"] == [2.0, 1.0]
        assert r["agree"] is True
        assert r["bn"] == [0.5, 0.5]
        assert r["value"] == "from rank 0"
        assert r["error"] == "output folder is not empty"  # rank 0's user error, everywhere
        assert r["same"] == distributed.fingerprint([torch.ones(3)])
        assert "calibrated quantizers differ between processes" in r["differ"]


def test_single_process_helpers_are_identities() -> None:
    x = torch.arange(4.0)
    assert distributed.gather_cat(x) is x
    assert distributed.sum_across([1, 2]) == [1, 2]
    assert distributed.on_main(lambda: 3) == 3
    model = nn.Linear(2, 2)
    assert distributed.wrap(model, torch.device("cpu")) is model
    assert distributed.world_size() == 1 and distributed.is_main()
