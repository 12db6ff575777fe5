"""onnxruntime's integer kernels, computed in PyTorch to the last bit.

The deploy model (:mod:`srqcli.deploy.graph`) runs srq's exported ONNX graph the way
onnxruntime's CPU provider runs it at its default optimisation level, where each
``DQ(x) → Conv/Gemm(DQ(w), bias) → Q`` group is fused into one integer kernel
(``QLinearConv``/``QGemm``). These functions are that arithmetic, nothing else:

* accumulation is exact: the codes are integers and the sums are formed in float64, which
  holds every int32 accumulator exactly (|acc| < 2^53), so neither the order of the sum nor
  the device matters, and the same code runs on CPU and GPU;
* the int32 bias is added to the accumulator;
* requantization multiplies the accumulator, converted to float32 (round to nearest even, as
  an int32 → float32 conversion does), by the float32 scale ``(x_scale·w_scale_c)/y_scale``
  formed in that order, rounds half to even, adds the zero point and saturates to the output
  container (MLAS ``MlasRequantizeOutput``; its clamp before the rounding gives the same codes
  because the bounds are integers);
* a float-output ``QGemm`` gives ``float32(acc)·float32(x_scale·w_scale_c)``.

Measured against onnxruntime 1.32 on this project's CPU (AVX2) with one-layer models whose
codes were random: every output code equal (tests/deploy/test_deploy_kernels.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: (lowest, highest) value of each integer container srq writes
CONTAINERS = {"uint8": (0, 255), "int8": (-128, 127), "int32": (-(2 ** 31), 2 ** 31 - 1),
              "int4": (-8, 7), "int2": (-2, 1)}


def quantize_linear(x: Tensor, scale: Tensor, zero_point: Tensor, container: str) -> Tensor:
    """ONNX ``QuantizeLinear``: ``saturate(round_half_even(x / scale) + zero_point)``.

    float32 division, as onnxruntime's ``MlasQuantizeLinear`` divides; returns the codes as a
    float64 tensor of integers (the deploy model's integer carrier).
    """
    lo, hi = CONTAINERS[container]
    q = torch.round(x.float() / scale.float()).double() + zero_point.double()
    return q.clamp(lo, hi)


def dequantize_linear(codes: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """ONNX ``DequantizeLinear``: ``float32(codes − zero_point)·scale`` in float32."""
    return (codes - zero_point.double()).float() * scale.float()


def requantize(acc: Tensor, scale: Tensor, zero_point: Tensor, container: str) -> Tensor:
    """An int32 accumulator (float64 carrier) to output codes, as onnxruntime requantizes."""
    lo, hi = CONTAINERS[container]
    y = torch.round(acc.float() * scale.float()) + zero_point.float()
    return y.clamp(lo, hi).double()


def output_scale(x_scale: Tensor, w_scale: Tensor, y_scale: Tensor) -> Tensor:
    """Per-channel requantization scale ``(x_scale·w_scale_c)/y_scale`` in float32."""
    return (x_scale.float() * w_scale.float()) / y_scale.float()


def accumulate(x_codes: Tensor, x_zero_point: Tensor, w_codes: Tensor, bias: Tensor | None,
               conv: dict | None) -> Tensor:
    """``Σ (x − zp_x)·w + bias`` exactly, in float64: a conv when ``conv`` gives its geometry
    (``stride``, ``padding``, ``dilation``, ``groups``), else a matrix product with ``w``
    output-channel first."""
    x = x_codes - x_zero_point.double()
    w = w_codes.double()
    acc = F.conv2d(x, w, **conv) if conv is not None else x @ w.t()
    if bias is not None:
        acc = acc + bias.double().reshape(-1, *([1] * (acc.dim() - 2)))
    return acc


def per_channel(v: Tensor, ndim: int) -> Tensor:
    """A per-output-channel vector shaped to broadcast over an ``ndim``-D activation."""
    return v.reshape(-1, *([1] * (ndim - 2))) if v.dim() == 1 else v
