"""Shared fixtures: small real runs reused across tests (the built-in digits data)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from srqcli.config import load_recipe
from srqcli.core import srq as srq_core
from srqcli.workflow.quantize import run_quantize


def gen(seed: int = 0) -> torch.Generator:
    """A seeded CPU generator (tests draw from explicit generators, never the global RNG)."""
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def eager_srq():
    """Eager SRQ math (fast to start) on one intra-op thread (small tensors; 2-core machine)."""
    previous, threads = srq_core._use_fused, torch.get_num_threads()
    srq_core.set_fused(False)
    torch.set_num_threads(1)
    yield
    srq_core.set_fused(previous)
    torch.set_num_threads(threads)


def quick_recipe(**overrides):
    """The built-in example recipe shortened for tests (real data, real training)."""
    r = load_recipe("example")
    r.model.pretrain_epochs = 4
    r.train.epochs = 2
    r.dropbits.bn_reestimate_batches = 5
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        setattr(getattr(r, section), key, value)
    return r.validate()


@pytest.fixture(scope="session")
def example_run(tmp_path_factory) -> Path:
    """One real quantize run of LeNet-5 on the digits example (W4A4, DropBits lsb)."""
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("runs") / "example"
    run_quantize(quick_recipe(), out, show_progress=False)
    return out
