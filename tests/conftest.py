"""Shared fixtures: small real runs reused across tests (the built-in digits data), a simulated
full disk for the atomic-write error paths."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
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


class _FullDisk:
    """A file object that takes ``room`` bytes and then fails the way a full disk does."""

    def __init__(self, real, room: int) -> None:
        self._real, self._room = real, room

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if len(view) > self._room:
            self._real.write(view[: self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(view)
        return self._real.write(view)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._real.close()

    def __getattr__(self, name: str):
        return getattr(self._real, name)


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(name, room=64)``: srq's temporary file for the output called ``name`` (any
    output when None) accepts ``room`` bytes, then every write fails with ENOSPC."""

    def install(name: str | None = None, room: int = 64) -> None:
        real_open = Path.open

        def open_(self, mode="r", *args, **kwargs):
            handle = real_open(self, mode, *args, **kwargs)
            is_temp = self.name.startswith(".") and self.name.endswith(".tmp")
            if "w" in mode and is_temp and (name is None or self.name.startswith(f".{name}.")):
                return _FullDisk(handle, room)
            return handle

        monkeypatch.setattr(Path, "open", open_)

    return install


def idx_bytes(array: np.ndarray) -> bytes:
    """An MNIST-style IDX file of a uint8 array."""
    magic = 2048 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_digits_idx(folder: Path, n_train: int = 200, n_val: int = 60) -> Path:
    """The first digits of the built-in example as an IDX data folder (real images, 28×28)."""
    from srqcli.data.example import NATURAL_SIZE, _digits

    images, labels = _digits(NATURAL_SIZE)
    pixels = (images[:, 0] * 255).round().to(torch.uint8).numpy()
    splits = {"train": slice(0, n_train), "t10k": slice(n_train, n_train + n_val)}
    folder.mkdir(parents=True)
    for split, rows in splits.items():
        (folder / f"{split}-images-idx3-ubyte").write_bytes(idx_bytes(pixels[rows]))
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(idx_bytes(labels[rows].numpy()))
    return folder


def leftovers(folder: Path) -> list[Path]:
    """Temporary files an interrupted atomic write would leave (there must be none)."""
    return sorted(p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".srq-write-test." in p.name)
