"""Quantized models without training, for export tests and benchmarks.

:func:`quantize_untrained` puts SRQ quantizers on any model and calibrates them on random
inputs; :func:`randomize_batchnorm` gives every BatchNorm distinct statistics and affine
parameters first. An untrained network whose BN biases are all equal is deduplicated by
exporters and then stops fusing (environment.md), and would never exercise BN folding (γ < 0,
non-zero means): export tests must use randomised BN.
"""

from __future__ import annotations

import torch
from torch import nn

from srqcli.config import QuantConfig, Recipe
from srqcli.io.quantized import ModelInfo, save_model
from srqcli.models import build_model
from srqcli.nn.surgery import quantize_model


@torch.no_grad()
def randomize_batchnorm(model: nn.Module, seed: int = 0, negative_gamma: float = 0.2) -> nn.Module:
    """Random running stats, γ (a fraction ``negative_gamma`` of them negative) and β."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.25)
            if m.weight is not None:
                sign = torch.where(torch.rand(c, generator=gen) < negative_gamma, -1.0, 1.0)
                m.weight.copy_(sign * (torch.rand(c, generator=gen) * 0.8 + 0.6))
                m.bias.copy_(torch.randn(c, generator=gen) * 0.2)
    return model


@torch.no_grad()
def quantize_untrained(model: nn.Module, input_shape: tuple[int, ...], *, weight_bits: int = 4,
                       act_bits: int = 4, per_channel: bool = False, input_bits: int = 8,
                       output_bits: int = 0, batches: int = 2, seed: int = 0, **cfg_overrides) -> nn.Module:
    """Quantize ``model`` in place (srq surgery) calibrated on ``batches`` random inputs.

    ``output_bits`` is 0 (layer inputs only) unless asked: export tests and benchmarks name
    each layout they cover, rather than inherit ``srq quantize``'s default."""
    gen = torch.Generator().manual_seed(seed)
    cfg = QuantConfig(weight_bits=weight_bits, act_bits=act_bits, input_bits=input_bits,
                      per_channel=per_channel, output_bits=output_bits, **cfg_overrides)
    data = [torch.randn(input_shape, generator=gen) for _ in range(batches)]
    model.eval()
    quantize_model(model, cfg, data, seed=seed)
    return model.eval()


def write_quantized_file(path, arch: str = "lenet5", *, model: nn.Module | None = None,
                         num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                         weight_bits: int = 4, act_bits: int = 4, per_channel: bool = False,
                         calib: list[torch.Tensor] | None = None, data_source: str = "example",
                         seed: int = 0, **quant: object) -> tuple[nn.Module, ModelInfo]:
    """Quantize ``model`` (default: a fresh ``arch`` with randomised BN) and save it as an srq
    quantized model file, as ``srq quantize`` would (without fine-tuning)."""
    if model is None:
        torch.manual_seed(seed)
        model = randomize_batchnorm(build_model(arch, num_classes, in_channels), seed)
    recipe = Recipe()
    recipe.model.arch = arch
    recipe.data.source = data_source
    recipe.quant.weight_bits, recipe.quant.act_bits = weight_bits, act_bits
    recipe.quant.per_channel = per_channel
    recipe.quant.output_bits = 0  # as quantize_untrained: layer inputs only unless asked
    for key, value in quant.items():  # other QuantConfig fields, e.g. layers={"fc*": {...}}
        setattr(recipe.quant, key, value)
    gen = torch.Generator().manual_seed(seed)
    calib = calib or [torch.randn(16, in_channels, image_size, image_size, generator=gen) for _ in range(2)]
    model.eval()
    _, plan = quantize_model(model, recipe.quant, calib, seed=seed)
    info = ModelInfo(arch=arch, num_classes=num_classes, in_channels=in_channels,
                     image_size=image_size, recipe=recipe, plan=plan)
    save_model(path, model, info)
    return model.eval(), info
