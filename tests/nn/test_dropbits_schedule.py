"""DropBits drawn ahead of the step (srqcli/nn/dropbits_schedule.py) drops what the forward
would have drawn itself, for a seed, on srq's models."""

from __future__ import annotations

import pytest
import torch

from srqcli.config import DropBitsConfig, QuantConfig
from srqcli.models import build_model
from srqcli.nn.dropbits_schedule import DropBitsSchedule
from srqcli.nn.surgery import quantize_model

pytestmark = pytest.mark.usefixtures("eager_srq")


def quantized(arch: str) -> tuple[torch.nn.Module, torch.Tensor]:
    channels, size = (1, 28) if arch in ("lenet5", "resnet20") else (3, 32)
    torch.manual_seed(0)
    x = torch.randn(2, channels, size, size)
    model, _ = quantize_model(build_model(arch, 10, channels),
                              QuantConfig(weight_bits=4, act_bits=4), [x])
    return model.train(), x


TORCHVISION = [pytest.param("resnet18", "lsb", marks=pytest.mark.slow),  # ~30 s: calibration
               ("mobilenet_v2", "lsb")]


@pytest.mark.parametrize("arch,variant", [(arch, variant) for arch in ("lenet5", "resnet20")
                                          for variant in ("lsb", "top", "mask")] + TORCHVISION)
def test_drawing_ahead_drops_the_same_bits(arch: str, variant: str) -> None:
    model, x = quantized(arch)
    cfg = DropBitsConfig(variant=variant, rate=0.3, anneal_epochs=0)
    outputs = []
    for draw_ahead in (False, True):
        schedule = DropBitsSchedule.attach(model, cfg, seed=0, draw_ahead=draw_ahead)
        with torch.no_grad():
            for step in range(2):  # two steps: the generator continues where it was
                torch.manual_seed(step)  # MobileNet's dropout draws from the global RNG
                schedule.hook(0, 1)(0.0)
                assert all((q.drawn is not None) == draw_ahead for q in schedule.quantizers)
                outputs.append(model(x))
    assert torch.equal(outputs[0], outputs[2]) and torch.equal(outputs[1], outputs[3])
    assert not torch.equal(outputs[0], outputs[1])  # the drops do change from step to step


def test_a_rate_change_drops_the_sample_drawn_at_the_old_rate() -> None:
    model, x = quantized("resnet20")
    with torch.no_grad():
        undropped = model(x)
    schedule = DropBitsSchedule.attach(model, DropBitsConfig(variant="lsb", rate=0.3), seed=0,
                                       draw_ahead=True)
    schedule.draw_()
    schedule.disable()
    assert all(q.drawn is None for q in schedule.quantizers)
    with torch.no_grad():
        assert torch.equal(model(x), undropped)
