"""The dataflow graph of a model, as export sees it: a torch.fx trace with shapes.

Quantized layers (:class:`~srqcli.nn.layers.QuantConv2d`/``QuantLinear``) are kept as leaves,
like every ``torch.nn`` layer, so the trace lists exactly the modules and functions the ONNX
builder has to translate. From the trace we also learn which BatchNorm directly follows which
convolution (the pairs that fold into the dequantization scale, docs/method.md §7): a BN folds into
a conv when the BN's only input is the conv's output and nothing else reads that output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from srqcli.errors import SrqError, short_reason
from srqcli.nn.layers import is_quant_layer

#: Modules with weights that export translates (quantized or left float).
_CONV_TYPES = (nn.Conv2d,)
_LINEAR_TYPES = (nn.Linear,)


class _Tracer(fx.Tracer):
    """torch.fx tracer that keeps srq's quantized layers as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if is_quant_layer(m):
            return True
        return super().is_leaf_module(m, module_qualified_name)


@dataclass
class TracedModel:
    """A traced model: its fx graph (with ``tensor_meta`` shapes) and module table."""

    gm: fx.GraphModule
    modules: dict[str, nn.Module]
    bn_folds: dict[str, str]  # conv/linear module name → name of the BatchNorm folded into it
    input_shape: tuple[int, ...]

    def module(self, node: fx.Node) -> nn.Module | None:
        return self.modules.get(node.target) if node.op == "call_module" else None  # type: ignore[arg-type]

    def shape(self, node: fx.Node) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def trace(model: nn.Module, input_shape: tuple[int, ...]) -> TracedModel:
    """Trace ``model`` (in eval mode) and propagate shapes with a zero input of ``input_shape``."""
    model = model.eval()
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # fx raises many types for untraceable Python control flow
        raise SrqError(f"cannot export {type(model).__name__}: torch.fx cannot trace it "
                       f"({short_reason(exc)})") from exc
    gm = fx.GraphModule(model, graph, class_name=type(model).__name__)
    modules = dict(gm.named_modules())
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(input_shape))
    except Exception as exc:
        raise SrqError(f"cannot export {type(model).__name__}: running it on a "
                       f"{'x'.join(map(str, input_shape))} input failed ({short_reason(exc)})") from exc
    traced = TracedModel(gm, modules, {}, tuple(input_shape))
    traced.bn_folds = find_bn_folds(traced)
    return traced


def find_bn_folds(traced: TracedModel) -> dict[str, str]:
    """Conv (or Linear) → BatchNorm pairs where the BN reads only that layer's output."""
    folds: dict[str, str] = {}
    for node in traced.gm.graph.nodes:
        bn = traced.module(node)
        if not isinstance(bn, (nn.BatchNorm2d, nn.BatchNorm1d)) or len(node.args) != 1:
            continue
        src = node.args[0]
        if not isinstance(src, fx.Node) or len(src.users) != 1:
            continue
        layer = traced.module(src)
        if layer is None or not bn.track_running_stats or bn.running_var is None:
            continue
        is_conv = isinstance(layer, _CONV_TYPES) and isinstance(bn, nn.BatchNorm2d)
        is_linear = isinstance(layer, _LINEAR_TYPES) and isinstance(bn, nn.BatchNorm1d) \
            and len(traced.shape(src) or ()) == 2
        if is_conv or is_linear:
            folds[str(src.target)] = str(node.target)
    return folds
