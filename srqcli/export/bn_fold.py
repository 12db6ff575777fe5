"""BatchNorm folding, in one place for every exporter (docs/method.md §7).

An eval-mode BatchNorm is the per-channel affine map ``bn(y) = g·y + h``. Folding it into the
layer before it multiplies that layer's per-output-channel factor (the dequantization scale
of a quantized layer, the float weight of a float one) by ``g`` and gives the bias
``h + g·b``. The ONNX graph, the packed file and the frozen layers all fold through
:func:`fold_batchnorm`, so the deployed numbers agree wherever they are written.

Everything is computed in float64; callers round to float32 where they store.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def bn_affine(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """``(g, h)`` in float64 with ``bn(y) = g·y + h`` per channel (eval mode)."""
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    inv = 1.0 / torch.sqrt(var + bn.eps)
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    g = gamma * inv
    return g, beta - mean * g


def fold_batchnorm(factor: Tensor, bias: Tensor | None, bn: nn.Module) -> tuple[Tensor, Tensor]:
    """Fold ``bn`` into a layer: ``(factor·g, h + g·bias)`` in float64.

    ``factor`` has the output channels on axis 0 (a ``(C,)`` scale, or a whole weight tensor);
    ``bias`` is the layer's own bias (``None``: none).
    """
    g, h = bn_affine(bn)
    folded = factor.detach().double() * g.reshape(-1, *([1] * (factor.dim() - 1)))
    return folded, h + (bias.detach().double() * g if bias is not None else 0.0)
