"""Static check that an ONNX file computes the same integers on every CPU.

onnxruntime fuses ``DQ(x) → Conv/Gemm/MatMul(DQ(w))`` with uint8 activations and int8 weights
into u8s8 integer kernels. On x86 without VNNI (AVX2, AVX-512BW) those kernels add pairs of
products with ``VPMADDUBSW``, whose int16 result saturates; VNNI and ARM kernels accumulate in
int32. A layer whose stored activation code ``x`` and weight code ``w`` can give
``x·|w| >`` :data:`~srqcli.core.grid.PAIR_PRODUCT_MAX` therefore computes other integers on an
AVX2 machine than on the machine that verified it (a one-conv model with uint8 codes up to 255
and int8 weights up to ±127 is 255 output steps off there), and no run on a VNNI machine can
see it. This module proves the bound from the file alone: it reads each candidate layer's
largest stored activation code from the ops that produce it (``QuantizeLinear`` saturation,
the ``Clip`` of the codes, ``BitShift``) and its largest weight code from the initializer.

The check is deliberately conservative: every Conv/Gemm/MatMul whose two inputs are
dequantized 8-bit integers counts, whether or not the runtime fuses it today.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from srqcli.core.grid import PAIR_PRODUCT_MAX

#: ops whose output codes are at most their first input's (on uint8 codes)
_MONOTONE = {"MaxPool", "Relu", "Identity", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze"}
_LAYERS = {"Conv", "Gemm", "MatMul"}


@dataclass(frozen=True)
class PairViolation:
    """One layer that may saturate x86 u8s8 kernels: its largest stored codes and product."""

    layer: str
    x_max: int
    w_max: int

    @property
    def product(self) -> int:
        return self.x_max * self.w_max

    def describe(self) -> str:
        return (f"layer {self.layer}: activation codes up to {self.x_max} × weight codes up to "
                f"±{self.w_max} = {self.product} > {PAIR_PRODUCT_MAX}, which saturates the int16 pair "
                "sums of onnxruntime's integer kernels on x86 CPUs without VNNI (AVX2)")


class _Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.inits = {t.name: t for t in model.graph.initializer}

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def uint8_max(self, name: str) -> int:
        """Largest value the uint8 tensor ``name`` can hold (255 when not provable lower)."""
        value = self.const(name)
        if value is not None:
            return int(value.max()) if value.size else 0
        node = self.producer.get(name)
        if node is None:
            return 255
        if node.op_type == "Clip" and len(node.input) > 2 and node.input[2]:
            hi = self.const(node.input[2])
            top = self.uint8_max(node.input[0])
            return min(top, int(hi.item())) if hi is not None else top
        if node.op_type == "BitShift":
            shift = self.const(node.input[1])
            direction = next((a.s for a in node.attribute if a.name == "direction"), b"")
            top = self.uint8_max(node.input[0])
            if shift is None or shift.size != 1:
                return 255
            top = top << int(shift.item()) if direction == b"LEFT" else top >> int(shift.item())
            return top if top <= 255 else 255  # a wrapped shift is not provably bounded
        if node.op_type in _MONOTONE:
            return self.uint8_max(node.input[0])
        return 255

    def dequantized(self, name: str) -> onnx.NodeProto | None:
        """The ``DequantizeLinear`` producing ``name``, through a weight ``Transpose``."""
        node = self.producer.get(name)
        if node is not None and node.op_type == "Transpose":
            node = self.producer.get(node.input[0])
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    def elem_type(self, name: str) -> int | None:
        if name in self.inits:
            return self.inits[name].data_type
        node = self.producer.get(name)
        if node is not None and node.op_type in ("QuantizeLinear",):
            zp = self.const(node.input[2]) if len(node.input) > 2 else None
            return TensorProto.UINT8 if zp is None or zp.dtype == np.uint8 else TensorProto.INT8
        if node is not None and node.op_type in ("Clip", "BitShift", *_MONOTONE):
            return self.elem_type(node.input[0])
        return None


def pair_bound_violations(model: onnx.ModelProto) -> list[PairViolation]:
    """Layers of ``model`` whose uint8 × int8 products may exceed the x86 pair bound."""
    g = _Graph(model)
    found = []
    for node in model.graph.node:
        if node.op_type not in _LAYERS or len(node.input) < 2:
            continue
        x_dq, w_dq = g.dequantized(node.input[0]), g.dequantized(node.input[1])
        if x_dq is None or w_dq is None:
            continue
        if g.elem_type(x_dq.input[0]) != TensorProto.UINT8 or g.elem_type(w_dq.input[0]) != TensorProto.INT8:
            continue  # not a u8s8 candidate (INT4/INT2 weights run as float after DQ)
        weights = g.const(w_dq.input[0])
        if weights is None:
            continue
        x_max = g.uint8_max(x_dq.input[0])
        w_max = int(np.abs(weights.astype(np.int64)).max()) if weights.size else 0
        if x_max * w_max > PAIR_PRODUCT_MAX:
            found.append(PairViolation(node.name or node.output[0], x_max, w_max))
    return found


def pair_bound_warning(path: str | os.PathLike) -> str | None:
    """One line for ``srq eval`` when the ONNX file at ``path`` breaks the pair bound (a file
    exported by another tool, or by srq before the bound), else ``None``."""
    found = pair_bound_violations(onnx.load(str(path), load_external_data=False))
    if not found:
        return None
    more = f" (also {', '.join(v.layer for v in found[1:])})" if len(found) > 1 else ""
    return (f"{Path(path).name} may compute other outputs on other CPUs: {found[0].describe()}{more}; "
            "the accuracy below holds for this machine only")
