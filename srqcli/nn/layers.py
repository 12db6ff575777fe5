"""Quantized Conv2d and Linear: a weight quantizer and an input-activation quantizer each.

They subclass the float layers and keep their parameter names (``weight``, ``bias``), so a
float state_dict loads into them unchanged and torchvision code that inspects ``.weight`` keeps
working. Only two submodules are added: ``weight_quant`` and ``input_quant``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from srqcli.nn.quantizer import Quantizer


class QuantConv2d(nn.Conv2d):
    """``Conv2d`` whose input and weight pass through SRQ quantizers (grouped/depthwise too)."""

    weight_quant: Quantizer
    input_quant: Quantizer

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.input_quant(x), self.weight_quant(self.weight), self.bias)


class QuantLinear(nn.Linear):
    """``Linear`` whose input and weight pass through SRQ quantizers."""

    weight_quant: Quantizer
    input_quant: Quantizer

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.input_quant(x), self.weight_quant(self.weight), self.bias)


#: Float layer type → quantized type. The single registry model surgery consults.
QUANT_LAYERS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv2d: QuantConv2d,
    nn.Linear: QuantLinear,
}

QuantLayer = QuantConv2d | QuantLinear


def is_quant_layer(module: nn.Module) -> bool:
    return isinstance(module, (QuantConv2d, QuantLinear))
