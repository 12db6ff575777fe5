"""Assemble a :class:`~srqcli.report.schema.BitReport` from a model (quantized or not).

All counting is done by :mod:`srqcli.report.stats`; this module only collects the facts per
layer, adds MACs/BOPs from one forward pass, totals, accuracy and the optional budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from srqcli import __version__
from srqcli.errors import SrqError
from srqcli.nn.layers import QUANT_LAYERS, is_quant_layer
from srqcli.report.schema import (
    BUDGET_KINDS,
    Accuracy,
    BitReport,
    Budget,
    LayerEntry,
    ModelFacts,
    Totals,
    finite,
)
from srqcli.report.stats import (
    FLOAT_BITS,
    count_macs,
    layer_stats,
    model_totals,
    pooled_cluster_fraction,
)

if TYPE_CHECKING:
    from srqcli.io.quantized import ModelInfo

#: What ``budget=`` accepts: a Budget, ``{"kind": …, "value": …}`` or ``(kind, value)``.
BudgetLike = Budget | Mapping[str, Any] | Sequence[Any]


def build_report(model: nn.Module, *, info: ModelInfo | None = None,
                 metrics: Mapping[str, Any] | None = None, budget: BudgetLike | None = None,
                 input_shape: Sequence[int] | None = None, source: str | None = None) -> BitReport:
    """The bit-allocation report of ``model``.

    Args:
        model: a quantized model (after surgery or from :func:`srqcli.io.quantized.load_model`);
            Conv2d/Linear layers left float are listed with 32 bits.
        info: the model file's metadata; gives the input size for MACs and, through
            ``info.metrics``, the accuracy.
        metrics: accuracy, either ``{"float_top1": …, "top1": …}`` (model-file form) or
            ``{"float": {"top1": …}, "quantized": {"top1": …}}`` (``metrics.json`` form);
            overrides ``info.metrics``.
        budget: the ``search-bits`` budget the allocation was made for, if any.
        input_shape: ``(C, H, W)`` for counting MACs; default from ``info``. With neither,
            MACs and BOPs are ``null``.
        source: where the model came from (a path), recorded as is.
    """
    if input_shape is None and info is not None:
        input_shape = (info.in_channels, info.image_size, info.image_size)
    macs = count_macs(model, input_shape) if input_shape is not None else None
    stats = {s.name: s for s in layer_stats(model)}
    layers = []
    for name, m in model.named_modules():
        if is_quant_layer(m):
            layers.append(_quant_entry(stats[name], macs))
        elif type(m) in QUANT_LAYERS:
            layers.append(_float_entry(name, m, macs))
    shape = None if input_shape is None else [1, *[int(s) for s in input_shape][-3:]]
    facts = ModelFacts(input_shape=shape)
    if info is not None:
        facts = ModelFacts(info.arch, info.num_classes, info.in_channels, info.image_size, shape,
                           info.preprocessing)
    totals = _totals(model, layers, macs is not None)
    return BitReport(srq_version=__version__, model=facts, layers=layers, totals=totals,
                     accuracy=_accuracy(info, metrics), budget=_budget(budget, totals),
                     source=source)


def _quant_entry(s, macs: dict[str, int] | None) -> LayerEntry:
    m = None if macs is None else macs.get(s.name, 0)
    return LayerEntry(
        name=s.name, type=s.type, quantized=True, shape=list(s.shape), groups=s.groups,
        params=s.params, macs=m, weight_bits=s.weight_bits, act_bits=s.act_bits,
        weight_signed=s.weight_signed, act_signed=s.act_signed, per_channel=s.per_channel,
        weight_steps=list(s.weight_step), weight_step_min=min(s.weight_step),
        weight_step_max=max(s.weight_step), act_step=s.act_step, packed_bytes=s.packed_bytes,
        bops=None if m is None else m * s.weight_bits * s.act_bits,
        cluster_fraction=finite(s.cluster_fraction), clipped_fraction=finite(s.clipped_fraction),
        output_bits=s.output_bits, output_step=s.output_step)


def _float_entry(name: str, m: nn.Module, macs: dict[str, int] | None) -> LayerEntry:
    n = m.weight.numel()
    mac = None if macs is None else macs.get(name, 0)
    return LayerEntry(
        name=name, type=type(m).__name__, quantized=False, shape=list(m.weight.shape),
        groups=getattr(m, "groups", 1), params=n, macs=mac, weight_bits=FLOAT_BITS,
        act_bits=FLOAT_BITS, weight_signed=None, act_signed=None, per_channel=None,
        weight_steps=[], weight_step_min=None, weight_step_max=None, act_step=None,
        packed_bytes=n * FLOAT_BITS // 8,
        bops=None if mac is None else mac * FLOAT_BITS * FLOAT_BITS,
        cluster_fraction=None, clipped_fraction=None)


def _totals(model: nn.Module, layers: list[LayerEntry], have_macs: bool) -> Totals:
    sizes = model_totals(model)
    q = [r for r in layers if r.quantized]
    macs = sum(r.macs or 0 for r in layers) if have_macs else None
    bops = sum(r.bops or 0 for r in layers) if have_macs else None
    float_bops = macs * FLOAT_BITS * FLOAT_BITS if macs is not None else None
    return Totals(
        quantized_layers=len(q), float_layers=len(layers) - len(q),
        quantized_params=int(sizes["quantized_params"]), float_params=int(sizes["float_params"]),
        float_bytes=int(sizes["float_bytes"]), packed_bytes=int(sizes["packed_bytes"]),
        compression=finite(sizes["compression"]), avg_weight_bits=float(sizes["avg_weight_bits"]),
        macs=macs, bops=bops, float_bops=float_bops,
        bops_reduction=finite(float_bops / bops) if bops else None,
        cluster_fraction=finite(pooled_cluster_fraction(q)))


def _top1(m: Mapping[str, Any] | None, flat: str, nested: str) -> float | None:
    if not m:
        return None
    value = m.get(flat)
    if value is None and isinstance(m.get(nested), Mapping):
        value = m[nested].get("top1")
    return finite(float(value)) if isinstance(value, (int, float)) else None


def _accuracy(info: ModelInfo | None, metrics: Mapping[str, Any] | None) -> Accuracy:
    acc = Accuracy()
    for m in (info.metrics if info is not None else None, metrics):  # later wins
        f, q = _top1(m, "float_top1", "float"), _top1(m, "top1", "quantized")
        acc = Accuracy(f if f is not None else acc.float_top1,
                       q if q is not None else acc.quantized_top1)
    return acc


def achieved(kind: str, totals: Totals) -> float | None:
    """The total a budget of ``kind`` is compared with (size in 10⁶ bytes of packed model)."""
    if kind == "avg_weight_bits":
        return totals.avg_weight_bits
    if kind == "size_mb":
        return totals.packed_bytes / 1e6
    return None if totals.bops is None else float(totals.bops)


def _budget(budget: BudgetLike | None, totals: Totals) -> Budget | None:
    if budget is None:
        return None
    if isinstance(budget, Budget):
        kind, value = budget.kind, budget.value
    elif isinstance(budget, Mapping):
        kind, value = budget.get("kind"), budget.get("value")
    else:
        kind, value = tuple(budget)
    if kind not in BUDGET_KINDS:
        raise SrqError(f"unknown budget kind {kind!r}; use one of {', '.join(BUDGET_KINDS)}")
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SrqError(f"budget {kind} must be a positive number, got {value!r}")
    got = achieved(kind, totals)
    met = None if got is None else got <= value * (1 + 1e-9)
    return Budget(kind, float(value), finite(got), met)
