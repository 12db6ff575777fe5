"""Shared builders for the bit-report tests: tiny quantized models with known shapes."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from srqcli.config import QuantConfig, Recipe
from srqcli.io.quantized import ModelInfo, save_model
from srqcli.models import build_model
from srqcli.nn.surgery import quantize_model

INPUT = (3, 8, 8)  # (C, H, W) of KnownShapes


class KnownShapes(nn.Module):
    """Plain, grouped and depthwise convs and two Linears, with and without bias.

    At input 3×8×8: a → 8×8×8, g → 8×8×8, dw (stride 2) → 8×4×4, fc1 128 → 12, fc2 12 → 5.
    """

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.relu_a = nn.ReLU()
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
        self.relu_g = nn.ReLU()
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.relu_dw = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(128, 12, bias=False)
        self.relu_fc = nn.ReLU()
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu_dw(self.dw(self.relu_g(self.g(self.relu_a(self.a(x))))))
        return self.fc2(self.relu_fc(self.fc1(self.flatten(x))))


def conv_macs(c_out: int, c_in: int, groups: int, k: int, h_out: int, w_out: int) -> int:
    """Independent textbook formula: each output element needs (C_in/groups)·k² MACs."""
    return c_out * h_out * w_out * (c_in // groups) * k * k


#: Per-image MACs of KnownShapes at INPUT, from the formula above.
KNOWN_MACS = {
    "a": conv_macs(8, 3, 1, 3, 8, 8),
    "g": conv_macs(8, 8, 2, 3, 8, 8),
    "dw": conv_macs(8, 8, 8, 3, 4, 4),
    "fc1": 128 * 12,
    "fc2": 12 * 5,
}


def quantized_known(cfg: QuantConfig | None = None, seed: int = 0) -> tuple[nn.Module, list]:
    torch.manual_seed(seed)
    model = KnownShapes()
    cfg = cfg or QuantConfig(weight_bits=4, act_bits=4, layers={"g": {"weight_bits": 3},
                                                             "dw": {"weight_bits": 2, "act_bits": 3}})
    calib = [torch.randn(4, *INPUT) for _ in range(2)]
    return quantize_model(model, cfg, calib, seed=seed)


def save_lenet_run(run: Path, *, per_channel: bool = True, quantized: bool = True,
                   metrics: dict | None = None) -> Path:
    """A run folder with a real (untrained) quantized LeNet-5 ``model.safetensors``."""
    torch.manual_seed(0)
    recipe = Recipe()
    recipe.quant.per_channel = per_channel
    recipe.quant.weight_bits, recipe.quant.first_last_bits = 3, 8
    model = build_model("lenet5", 10, 1)
    plan = []
    if quantized:
        model, plan = quantize_model(model, recipe.quant, [torch.randn(8, 1, 28, 28)])
    info = ModelInfo(arch="lenet5", num_classes=10, in_channels=1, image_size=28, recipe=recipe,
                     plan=plan, metrics=metrics if metrics is not None else
                     {"float_top1": 98.5, "top1": 97.25})
    path = run / "model.safetensors"
    save_model(path, model, info)
    return path
