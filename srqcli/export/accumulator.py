"""Finer int32 bias grids for fused integer kernels, without changing the model.

When onnxruntime fuses ``DQ(x) → Conv(DQ(w), b) → Q`` into ``QLinearConv`` (or a ``Gemm`` into
``QGemm``) it rounds the float bias ``b`` to the accumulator grid, step ``x_scale·w_scale_c``.
With BatchNorm folded into the bias, that rounding is a genuine deviation from the PyTorch
model of up to half an accumulator step per channel. At 3–4 bits one accumulator step is a
sizeable fraction of the next layer's activation step, so the rounding flips about 1% of the
next layer's codes, and a trained low-bit network amplifies every flip layer after layer (the
Fashion-MNIST ResNet-20 lost 1.6–3.6% top-1 agreement with PyTorch this way; bench notes).

The accumulator step can be made finer without touching the computed values, because low-bit
codes use a small part of their 8-bit containers:

* weight codes of output channel ``c`` are stored multiplied by an integer ``m_c`` and their
  scale divided by ``m_c`` (``(k·m_c)·(s_c/m_c) = k·s_c``);
* the unsigned input codes of the layer are shifted left by ``s`` bits (an ONNX ``BitShift``
  on the uint8 codes) and their scale divided by ``2^s``.

The bias step becomes ``x_scale·s_c/(2^s·m_c)``. ``m_c`` need not be a power of two: among the
allowed multipliers we pick, per channel, the one whose grid lies closest to the bias
(simultaneous approximation does much better than the largest multiplier alone).

Limits: the scaled codes must fit int8 (weights) and uint8 (activations), and every product
must satisfy ``x·|w| ≤`` :data:`~srqcli.core.grid.PAIR_PRODUCT_MAX`: onnxruntime's u8s8 kernels
for AVX2 and AVX-512 without VNNI add pairs of products with ``VPMADDUBSW``, which saturates at
int16. Signed activations (zero point ``2^(b−1)``) are not shifted: a shift would move the zero
point too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from srqcli.core.grid import PAIR_PRODUCT_MAX

INT8_MAX = 127
INT8_MIN = -128
UINT8_MAX = 255


@dataclass(frozen=True)
class CodeScaling:
    """How one fused layer stores its codes: input codes ``<< act_shift``, weight codes
    of channel ``c`` times ``weight_mult[c]``; scales divided accordingly."""

    act_shift: int
    weight_mult: np.ndarray  # (C_out,) int64, ≥ 1

    @property
    def act_factor(self) -> int:
        return 1 << self.act_shift


def bias_rounding_error(bias: np.ndarray, act_scale: np.ndarray, weight_scale: np.ndarray) -> np.ndarray:
    """``|b − round(b/t)·t|`` with ``t = act_scale·weight_scale`` in float32, as onnxruntime
    rounds a float bias to int32 when it fuses a layer."""
    t = np.abs(np.float32(act_scale) * weight_scale.astype(np.float32))
    b = bias.astype(np.float32)
    return np.abs(b.astype(np.float64) - np.round(b / t).astype(np.float64) * t.astype(np.float64))


def _max_multipliers(codes: np.ndarray, x_max: int) -> np.ndarray:
    """Per output channel, the largest integer multiplier that keeps the weight codes in int8
    and every product with an input code up to ``x_max`` within :data:`PAIR_PRODUCT_MAX`."""
    flat = codes.reshape(codes.shape[0], -1).astype(np.int64)
    hi = np.maximum(flat.max(axis=1), 1)
    lo = np.maximum(-flat.min(axis=1), 1)
    mag = np.maximum(hi, lo)
    limit = np.minimum(np.minimum(INT8_MAX // hi, -INT8_MIN // lo), PAIR_PRODUCT_MAX // (x_max * mag))
    return np.maximum(limit, 1)


def plan_code_scaling(codes: np.ndarray, weight_scale: np.ndarray, bias: np.ndarray, act_step: float,
                      code_hi: int, zero_point: int) -> CodeScaling:
    """The code scaling that minimises the total int32 bias rounding error of one layer.

    Args:
        codes: integer weight codes as deployed, output channel first.
        weight_scale: float32 per-channel dequantization scale of ``codes``.
        bias: float32 per-channel bias (BatchNorm folded in).
        act_step: step of the layer's input codes.
        code_hi: largest input code (after ``Clip``), zero point excluded.
        zero_point: uint8 zero point of the input codes (0, or ``2^(b−1)`` for a signed grid).
    """
    shifts = [0]
    if zero_point == 0:
        while code_hi << (shifts[-1] + 1) <= UINT8_MAX:
            shifts.append(shifts[-1] + 1)
    best: tuple[float, CodeScaling] | None = None
    for shift in shifts:
        limit = _max_multipliers(codes, (code_hi << shift) + zero_point)
        act_scale = np.float32(act_step) / np.float32(1 << shift)
        mults = np.arange(1, int(limit.max()) + 1)
        errors = np.stack([bias_rounding_error(bias, act_scale, weight_scale / np.float32(m)) for m in mults])
        errors[mults[:, None] > limit[None, :]] = np.inf
        choice = errors.argmin(axis=0)
        total = float(errors[choice, np.arange(len(choice))].sum())
        if best is None or total < best[0]:
            best = (total, CodeScaling(shift, mults[choice].astype(np.int64)))
    assert best is not None
    return best[1]
