"""A quantized model is one graph under ``torch.compile`` (issue #16): no host reads, caches,
data-dependent branches or generator draws in the forward, in training and in eval.

Counted with ``torch._dynamo.explain``, which traces without compiling kernels: the graphs a
whole-model ``torch.compile`` would get, and why it would break them. SRQ runs with DropBits
(the default ``lsb`` variant, drawn ahead of the step as a compiled training loop draws it).
"""

from __future__ import annotations

import functools

import pytest
import torch

from srqcli.config import DropBitsConfig, QuantConfig
from srqcli.methods.names import METHODS
from srqcli.models import build_model
from srqcli.nn.dropbits_schedule import DropBitsSchedule
from srqcli.nn.surgery import quantize_model


@functools.cache
def quantized(arch: str, method: str, output_bits: int = 8, per_channel: bool = True,
              variant: str = "lsb") -> tuple[torch.nn.Module, torch.Tensor]:
    """A W3A3 model of ``arch`` (10 classes, small input) quantized by ``method``."""
    channels, size = (1, 28) if arch in ("lenet5", "resnet20") else (3, 32)
    torch.manual_seed(0)
    x = torch.randn(4, channels, size, size)
    cfg = QuantConfig(method=method, weight_bits=3, act_bits=3, output_bits=output_bits,
                      per_channel=per_channel and method != "dq")
    model, _ = quantize_model(build_model(arch, 10, channels), cfg, [x])
    if method == "srq":
        DropBitsSchedule.attach(model, DropBitsConfig(variant=variant, rate=0.2), seed=0,
                                draw_ahead=True).draw_()
    return model, x


def graphs(model: torch.nn.Module, x: torch.Tensor, mode: str) -> tuple[int, int, list[str]]:
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model.train(mode == "train"))(x)
    return (explained.graph_count, explained.graph_break_count,
            [str(b.reason).splitlines()[0] for b in explained.break_reasons])


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_is_one_graph(method: str, mode: str) -> None:
    assert graphs(*quantized("lenet5", method), mode) == (1, 0, [])


@pytest.mark.parametrize("method,output_bits,per_channel,variant", [
    ("srq", 0, False, "lsb"), ("srq", 8, True, "top"),
    pytest.param("srq", 8, True, "mask", marks=pytest.mark.slow),  # ~20 s: 13 codes per weight
    ("lsq", 0, False, "lsb")])
def test_without_output_quantizers_per_tensor_and_every_dropbits_variant(
        method: str, output_bits: int, per_channel: bool, variant: str) -> None:
    model, x = quantized("lenet5", method, output_bits, per_channel, variant)
    assert graphs(model, x, "train") == (1, 0, [])


@pytest.mark.slow  # 15–60 s each on 2 CPU cores (calibration and tracing)
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("method", ["srq", "lsq"])
@pytest.mark.parametrize("arch", ["resnet20", "resnet18", "mobilenet_v2"])
def test_cnns_are_one_graph(arch: str, method: str, mode: str) -> None:
    assert graphs(*quantized(arch, method), mode) == (1, 0, [])
