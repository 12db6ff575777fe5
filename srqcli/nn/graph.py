"""The dataflow graph of a model, as export sees it: a torch.fx trace with shapes.

Quantized layers (:class:`~srqcli.nn.layers.QuantConv2d`/``QuantLinear``) are kept as leaves,
like every ``torch.nn`` layer, so the trace lists exactly the modules and functions the ONNX
builder has to translate. From the trace we also learn which BatchNorm directly follows which
convolution (the pairs that fold into the dequantization scale, docs/method.md §7): a BN folds into
a conv when the BN's only input is the conv's output and nothing else reads that output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
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


def trace(model: nn.Module, input_shape: tuple[int, ...], purpose: str = "export") -> TracedModel:
    """Trace ``model`` and propagate shapes with a zero input of ``input_shape`` (on the
    model's device). The model is left in eval mode. ``purpose`` completes the error message
    ("cannot <purpose> <model>: …")."""
    model = model.eval()
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # fx raises many types for untraceable Python control flow
        raise SrqError(f"cannot {purpose} {type(model).__name__}: torch.fx cannot trace it "
                       f"({short_reason(exc)})") from exc
    gm = fx.GraphModule(model, graph, class_name=type(model).__name__)
    modules = dict(gm.named_modules())
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(input_shape, device=device))
    except Exception as exc:
        raise SrqError(f"cannot {purpose} {type(model).__name__}: running it on a "
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


# --------------------------------------------------------------------------------------------
# classification of traced nodes and where quantizers sit
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeOp:
    """What a traced node does, in quantization terms (can a quantizer move across it?)."""

    kind: str  # relu | clip | maxpool | flatten | reshape | noop | other
    lo: float = -math.inf
    hi: float = math.inf


#: ops a quantizer can move across: range limits (absorbed) or pure data movement (repeated)
TRANSPARENT = ("relu", "clip", "maxpool", "flatten", "reshape", "noop")


def node_arg(node: fx.Node, index: int, name: str, default: Any) -> Any:
    """Argument ``index`` of a call node, given positionally or as keyword ``name``."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _same_shape(node: fx.Node, traced: TracedModel) -> bool:
    src = node.args[0] if node.args else None
    return isinstance(src, fx.Node) and traced.shape(src) is not None and traced.shape(src) == traced.shape(node)


def classify(node: fx.Node, traced: TracedModel) -> NodeOp:
    m = traced.module(node)
    if node.op == "call_module":
        if isinstance(m, nn.ReLU):
            return NodeOp("relu", 0.0)
        if isinstance(m, nn.ReLU6):
            return NodeOp("clip", 0.0, 6.0)
        if isinstance(m, nn.Hardtanh):
            return NodeOp("clip", float(m.min_val), float(m.max_val))
        if isinstance(m, nn.MaxPool2d) and not m.return_indices:
            return NodeOp("maxpool")
        if isinstance(m, nn.Flatten):
            return NodeOp("flatten")
        if isinstance(m, (nn.Dropout, nn.Identity)):
            return NodeOp("noop")
        if isinstance(m, nn.AdaptiveAvgPool2d) and _same_shape(node, traced):
            return NodeOp("noop")
        return NodeOp("other")
    if node.op == "call_function":
        t = node.target
        if t in (F.relu, torch.relu):
            return NodeOp("relu", 0.0)
        if t is F.relu6:
            return NodeOp("clip", 0.0, 6.0)
        if t is F.hardtanh:
            return NodeOp("clip", float(node_arg(node, 1, "min_val", -1.0)), float(node_arg(node, 2, "max_val", 1.0)))
        if t is F.max_pool2d and not node_arg(node, 6, "return_indices", False):
            return NodeOp("maxpool")
        if t is torch.flatten:
            return NodeOp("flatten")
        if t is F.dropout or (getattr(t, "__name__", "") == "stochastic_depth"
                              and not node_arg(node, 3, "training", True)):
            return NodeOp("noop")  # eval mode: identity
        return NodeOp("other")
    if node.op == "call_method":
        if node.target in ("relu", "relu_"):
            return NodeOp("relu", 0.0)
        if node.target == "flatten":
            return NodeOp("flatten")
        if node.target in ("view", "reshape"):
            return NodeOp("reshape")
        if node.target == "contiguous":
            return NodeOp("noop")
    return NodeOp("other")


def quantizer_source(layer: fx.Node, traced: TracedModel) -> tuple[fx.Node, list[fx.Node]] | None:
    """Where the input quantizer of ``layer`` can move: the node producing the value it
    quantizes, reached backwards through single-reader transparent ops (``chain``, layer side
    first), or ``None`` when that value is read elsewhere too or is the network input."""
    chain: list[fx.Node] = []
    cur = layer.args[0]
    while isinstance(cur, fx.Node) and len(cur.users) == 1 and classify(cur, traced).kind in TRANSPARENT:
        chain.append(cur)
        cur = cur.args[0]
    if not isinstance(cur, fx.Node) or len(cur.users) != 1 or cur.op == "placeholder":
        return None
    return cur, chain


def model_output_layer(traced: TracedModel, layers: set[str]) -> str | None:
    """The layer (one of ``layers``) whose output is the model output, through its folded BN
    and shape-only ops, or ``None``."""
    out = next(n for n in traced.gm.graph.nodes if n.op == "output").args[0]
    while isinstance(out, fx.Node):
        name = str(out.target)
        if out.op == "call_module" and name in layers:
            return name
        if out.op == "call_module" and name in traced.bn_folds.values():
            out = out.args[0]
            continue
        if classify(out, traced).kind in ("noop", "flatten", "reshape"):
            out = out.args[0]
            continue
        return None
    return None


def float_output_sites(traced: TracedModel, layers: list[str]) -> dict[str, str]:
    """Quantized ``layers`` whose output no quantizer reads, each with the module whose
    output that is (its folded BatchNorm, else the layer itself).

    An integer kernel (onnxruntime's ``QLinearConv``/``QGemm``) needs a quantized input *and*
    output. A layer's output is quantized when the next layer's input quantizer can move onto
    it (:func:`quantizer_source`); a residual branch (the add reads it), a layer whose output
    fans out (a stem feeding a skip connection) or one read by average pooling stays float,
    and its conv runs in float. The model's output layer (the logits) is left out: nothing
    after it would run faster.
    """
    wanted = set(layers)
    sources = set()
    for node in traced.gm.graph.nodes:
        if node.op == "call_module" and str(node.target) in wanted:
            found = quantizer_source(node, traced)
            if found is not None:
                sources.add(found[0])
    last = model_output_layer(traced, wanted)
    sites: dict[str, str] = {}
    for node in traced.gm.graph.nodes:
        name = str(node.target)
        if node.op != "call_module" or name not in wanted or name == last:
            continue
        bn = traced.bn_folds.get(name)
        out = next(iter(node.users)) if bn else node
        if out not in sources:
            sites[name] = bn or name
    return sites
