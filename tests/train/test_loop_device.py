"""Batches on their way to the device: channels-last on CUDA only."""

from __future__ import annotations

import pytest
import torch

from srqcli.train.loop import to_device


def test_cpu_batches_keep_their_layout() -> None:
    images = torch.randn(2, 3, 8, 8)
    moved = to_device(images, torch.device("cpu"))
    assert moved.is_contiguous() and torch.equal(moved, images)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batches_are_channels_last_and_convs_follow() -> None:
    device = torch.device("cuda")
    images = to_device(torch.randn(2, 3, 8, 8).pin_memory(), device)
    assert images.is_contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(3, 4, 3).to(device)  # weights stay NCHW: the input decides
    out = conv(images)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, conv(images.contiguous()))
    flat = to_device(torch.randn(2, 5), device)  # not an image batch: left alone
    assert flat.is_contiguous()
