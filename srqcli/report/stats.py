"""Per-layer facts about a quantized model: parameters, bits, packed bytes, averages.

The single place that counts sizes, so the summary of ``srq quantize``, ``metrics.json`` and
the bit-allocation report always agree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from torch import nn

from srqcli.nn.layers import is_quant_layer
from srqcli.nn.quantizer import SRQQuantizer

FLOAT_BITS = 32


@dataclass(frozen=True)
class LayerStats:
    """Size facts of one quantized layer."""

    name: str
    type: str
    shape: tuple[int, ...]
    params: int  # weight elements (the quantized ones)
    weight_bits: int
    act_bits: int
    act_signed: bool
    weight_step: list[float]
    act_step: float

    @property
    def packed_bytes(self) -> int:
        return math.ceil(self.params * self.weight_bits / 8)


def layer_stats(model: nn.Module) -> list[LayerStats]:
    """One :class:`LayerStats` per quantized layer, in definition order."""
    rows = []
    for name, m in model.named_modules():
        if not is_quant_layer(m):
            continue
        w, a = m.weight_quant.encoding(), m.input_quant.encoding()
        rows.append(LayerStats(name, type(m).__name__.replace("Quant", ""), tuple(m.weight.shape),
                               m.weight.numel(), w.bits, a.bits, a.signed,
                               [float(s) for s in w.step.flatten()], float(a.step)))
    return rows


def model_totals(model: nn.Module) -> dict[str, float]:
    """Float size, packed size (quantized weights at their bits, the rest float32), averages."""
    rows = layer_stats(model)
    quantized_ids = {id(m.weight) for m in model.modules() if is_quant_layer(m)}
    quantizer_ids = {id(p) for q in model.modules() if isinstance(q, SRQQuantizer)
                     for p in q.parameters()}
    other = sum(p.numel() for p in model.parameters()
                if id(p) not in quantized_ids and id(p) not in quantizer_ids)
    steps = sum(len(r.weight_step) + 1 for r in rows)
    qparams = sum(r.params for r in rows)
    float_bytes = (qparams + other) * FLOAT_BITS // 8
    packed = sum(r.packed_bytes for r in rows) + (other + steps) * FLOAT_BITS // 8
    return {
        "quantized_params": qparams,
        "float_params": other,
        "avg_weight_bits": sum(r.params * r.weight_bits for r in rows) / max(qparams, 1),
        "float_bytes": float_bytes,
        "packed_bytes": packed,
        "compression": float_bytes / packed if packed else float("nan"),
    }


def stats_as_dicts(model: nn.Module) -> list[dict]:
    return [{**asdict(r), "packed_bytes": r.packed_bytes} for r in layer_stats(model)]
