"""The training loop's reported speed: the first step's one-off costs stay out of images/s."""

from __future__ import annotations

import types

import pytest
import torch
from conftest import gen
from torch import nn

from srqcli.config import TrainConfig
from srqcli.train import loop
from srqcli.train.loop import build_optimizer, train_epoch


@pytest.fixture
def clock(monkeypatch) -> types.SimpleNamespace:
    """The loop's clock, advanced only by the test: exact times on a loaded machine."""
    fake = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: fake.now))
    return fake


def run_pass(steps: int, clock: types.SimpleNamespace, first_s: float, other_s: float):
    """A pass of ``steps`` batches of 8 whose first step takes ``first_s`` (the stand-in for
    torch.compile of the SRQ kernels) and every other ``other_s``."""
    model = nn.Linear(4, 3)
    batches = [(torch.randn(8, 4, generator=gen(i)), torch.randint(0, 3, (8,), generator=gen(i)))
               for i in range(steps)]
    opt, sched = build_optimizer(model, TrainConfig(), 1e-2, steps)

    def step_takes(fraction: float) -> None:
        clock.now += first_s if fraction == 0.0 else other_s

    return train_epoch(model, batches, opt, sched, torch.device("cpu"), amp=False, reporter=None,
                       label="", before_step=step_takes)


def test_images_per_s_leaves_out_the_first_step(clock) -> None:
    _loss, _acc, images_per_s, seconds = run_pass(6, clock, first_s=100.0, other_s=1.0)
    assert seconds == 105.0  # the pass's time includes the first step
    assert images_per_s == 5 * 8 / 5.0  # the 5 steps after it: 40 images in 5 s


def test_one_step_pass_reports_its_own_rate(clock) -> None:
    _loss, _acc, images_per_s, seconds = run_pass(1, clock, first_s=4.0, other_s=1.0)
    assert (images_per_s, seconds) == (2.0, 4.0)
