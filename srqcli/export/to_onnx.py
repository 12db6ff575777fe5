"""Build an ONNX graph of a quantized model from its torch.fx trace (docs/method.md §7).

Two layouts:

``qdq`` (default): weights are integer codes in int8 containers followed by
``DequantizeLinear`` (per output channel, axis 0, when a BatchNorm is folded in or the weight
steps are per channel); each quantized layer's input is ``QuantizeLinear → DequantizeLinear``
in uint8 (zero point ``2^(b−1)`` for signed ``b``-bit grids) with, when the layer's grid is narrower than the
container, a ``Clip`` of the integer codes to the b-bit range in between. Where the value a
layer quantizes is produced by a convolution or linear layer through ops that commute with
quantization (ReLU, ReLU6/Hardtanh as clip bounds, max-pooling, flatten, dropout), the
quantizer is moved onto that producer's output, giving

    DQ(x) → Conv(DQ(w), b) → Q(u8) → Clip(codes to the b-bit range) → DQ → next Conv

which onnxruntime fuses into ``QLinearConv`` (and ``Gemm`` into ``QGemm``). The Clip acts on
the uint8/int8 *codes*; environment.md's ``Q → DQ → Clip → Q → DQ`` fuses too but costs three
float passes per layer instead of one byte-wise pass. The move is exact: a ReLU is
the container's saturation at 0, a ReLU6 is a tighter clip bound, and max-pool/flatten commute
with a monotone elementwise quantizer. A conv whose output is read in float (a residual add,
average pooling, the logits) keeps a float bias and runs as ``DQ → Conv``, unless the model
quantizes that output itself (``srq quantize --output-bits``, :mod:`srqcli.nn.output_quant`):
its output quantizer becomes ``Q → DQ`` right after the conv (BN folded), and the conv fuses.

Such a float-output conv cannot fuse, and onnxruntime does not constant-fold a weight
``DequantizeLinear`` in a QDQ model: it dequantizes the codes on every run and the conv then
cannot pre-pack its weights (ResNet-18: ~12 of ~20 convs, most of the run time). Opt-in
(``float_unfused``): those convs store ``codes·scale`` as float32 initializers instead, the
very values ``DequantizeLinear`` computes, so the export stays exact and runs them as
pre-packed float convs, at the price of 4 bytes per weight for those layers.

A fused layer's bias is rounded by onnxruntime to the int32 accumulator grid
``x_scale·w_scale``; to keep that rounding far below PyTorch's float bias, such layers store
their weight codes times a per-channel integer and their (unsigned) input codes shifted left
(``BitShift``), scales divided to match: same values, a grid up to ~500× finer
(:mod:`srqcli.export.accumulator`).

``packed``: the same graph with weight initializers stored at their true width where the
opset allows: INT4 (opset ≥ 21) for 3–4-bit weights, INT2 (opset ≥ 25) for 2-bit weights
(INT4 below opset 25), int8 for 5–8 bits. onnxruntime executes these with float kernels after
``DequantizeLinear`` (no integer fusion); it is the smallest file, not the fastest.

The network's float BatchNorms that do not follow a layer become ``BatchNormalization``.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import fx, nn

from srqcli.errors import SrqError
from srqcli.export.accumulator import CodeScaling, plan_code_scaling
from srqcli.core.encoding import Encoding
from srqcli.export.bn_fold import bn_affine, fold_batchnorm
from srqcli.export.encodings import FrozenLayer, FrozenModel
from srqcli.export.packing import pack_bits
from srqcli.nn.graph import (
    TRANSPARENT,
    NodeOp,
    TracedModel,
    classify,
    model_output_layer,
    node_arg,
    quantizer_source,
)
from srqcli.nn.layers import is_quant_layer

LAYOUTS = ("qdq", "packed")
_SHAPE_ARITHMETIC = (operator.getitem, operator.floordiv, operator.mul, operator.add, operator.sub)
DEFAULT_OPSET = {"qdq": 19, "packed": 21}
MIN_OPSET = {"qdq": 13, "packed": 21}
INT2_OPSET = 25
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def max_onnx_opset() -> int:
    return onnx.defs.onnx_opset_version()


def check_opset(layout: str, opset: int | None) -> int:
    """The opset to write; one-line :class:`SrqError` when onnx cannot write it."""
    if layout not in LAYOUTS:
        raise SrqError(f"unknown ONNX layout {layout!r}; use {' or '.join(LAYOUTS)}")
    if opset is None:
        return DEFAULT_OPSET[layout]
    top = max_onnx_opset()
    if opset > top:
        raise SrqError(f"opset {opset} is newer than the installed onnx {onnx.__version__} can write "
                       f"(at most {top}); pass --opset {top} or lower, or upgrade onnx")
    if opset < MIN_OPSET[layout]:
        why = "INT4 initializers" if layout == "packed" else "per-channel QuantizeLinear/DequantizeLinear"
        raise SrqError(f"the {layout} layout needs opset {MIN_OPSET[layout]} or newer ({why}); got --opset {opset}")
    return opset


@dataclass
class _Placement:
    """A layer-input quantizer moved onto the output of ``producer``: one layer's, or the one
    quantizer that several layers reading the same value share (:func:`_shared_source`)."""

    encoding: Encoding
    lo: int
    hi: int
    chain: list[fx.Node]  # transparent nodes between producer and the layer, producer side first
    consumers: list[fx.Node]


def _clip_codes(enc: Encoding, op: NodeOp, lo: int, hi: int) -> tuple[int, int]:
    """Code range after a range-limiting op ``op`` (bounds divided by the step as PyTorch does)."""
    step = enc.step
    if math.isfinite(op.lo):
        lo = max(lo, int(torch.round(torch.tensor(op.lo, dtype=torch.float32) / step)))
    if math.isfinite(op.hi):
        hi = min(hi, int(torch.round(torch.tensor(op.hi, dtype=torch.float32) / step)))
    return lo, max(lo, hi)


def _shared_source(layer: fx.Node, traced: TracedModel, frozen: FrozenModel
                   ) -> tuple[fx.Node, list[fx.Node], list[fx.Node]] | None:
    """Where the input quantizer of ``layer`` can move when the value it quantizes is read by
    several layers, all of them quantized layers with the same input quantizer (a stem
    feeding a block's first conv and its downsampling conv, a max-pool feeding both branches
    of a ShuffleNet unit): ``(producer, chain, readers)``, else ``None``.

    Quantizing once for all readers computes the same codes. onnxruntime does that itself
    (it merges the identical ``Q`` nodes, drops a ``Relu`` before a ``Q`` whose zero point is
    0 and moves the ``Q`` before a ``MaxPool``) and then fuses the producing conv; writing
    the graph so keeps the deploy model (:mod:`srqcli.deploy.graph`), which runs the file as
    written, and onnxruntime on the same integer kernels."""
    value = layer.args[0]
    if not isinstance(value, fx.Node) or value.op == "placeholder" or len(value.users) < 2:
        return None
    readers = list(value.users)
    encodings = set()
    for r in readers:
        if r.op != "call_module" or str(r.target) not in frozen.layers or r.args[:1] != (value,) \
                or len(r.args) != 1 or r.kwargs:
            return None
        encodings.add(frozen.layers[str(r.target)].input)
    if len(encodings) != 1:
        return None
    chain: list[fx.Node] = []
    cur = value
    while classify(cur, traced).kind in TRANSPARENT and (cur is value or len(cur.users) == 1):
        chain.append(cur)
        cur = cur.args[0]
        if not isinstance(cur, fx.Node):
            return None
    if cur.op == "placeholder" or (cur is not value and len(cur.users) != 1):
        return None
    return cur, chain, readers


def plan_placements(traced: TracedModel, frozen: FrozenModel) -> tuple[dict[fx.Node, _Placement], set[fx.Node]]:
    """Where each layer-input quantizer goes; the transparent nodes absorbed by moving it."""
    placements: dict[fx.Node, _Placement] = {}
    absorbed: set[fx.Node] = set()
    for node in traced.gm.graph.nodes:
        if node.op != "call_module" or str(node.target) not in frozen.layers:
            continue
        found = quantizer_source(node, traced)
        readers = [node]
        if found is None:
            shared = _shared_source(node, traced, frozen)
            if shared is not None:
                *found, readers = shared
        if found is None or found[0] in placements:
            continue  # read elsewhere too: quantize at the layer's input only
        cur, chain = found
        enc = frozen.layers[str(node.target)].input
        lo, hi = enc.grid.kmin, enc.grid.kmax
        for c in chain:
            op = classify(c, traced)
            if op.kind in ("relu", "clip"):
                lo, hi = _clip_codes(enc, op, lo, hi)
        placements[cur] = _Placement(enc, lo, hi, list(reversed(chain)), readers)
        absorbed.update(chain)
    return placements, absorbed


# --------------------------------------------------------------------------------------------
# graph builder
# --------------------------------------------------------------------------------------------

def _zero_point(lo: int) -> int:
    """uint8 zero point for codes ``≥ lo``: 0 for non-negative codes, ``−lo`` for signed ones.

    Activations always use uint8 containers: onnxruntime's x86 integer kernels want uint8
    activations, and its own int8 → uint8 rewrite only applies to a bare ``Q → DQ`` pair, not
    to ``Q → Clip → DQ`` (int8 activations left 18 of MobileNet-V2's 52 convs unfused).
    Zero point ``−lo`` (``2^(b−1)`` for a ``b``-bit signed grid) stores the codes as
    ``0 … 2^b − 1``, the smallest stored values, so a layer's products stay within the
    x86 pair bound (:func:`srqcli.core.grid.portable_weight_bits`); zero point 128 would
    make a 4-bit signed code up to 135, which times an 8-bit weight code breaks it.
    """
    return max(0, -lo)


@dataclass
class OnnxStats:
    """What the builder did, for reports and tests."""

    fused_candidates: list[str] = field(default_factory=list)  # layers with a Q on their output
    float_output_layers: list[str] = field(default_factory=list)
    requantized: list[str] = field(default_factory=list)  # float outputs given an int8 Q/DQ
    quantized_outputs: list[str] = field(default_factory=list)  # layers with an output quantizer
    weight_types: dict[str, str] = field(default_factory=dict)
    bias_inputs: dict[str, str] = field(default_factory=dict)  # layer → its bias initializer


class _Builder:
    def __init__(self, traced: TracedModel, frozen: FrozenModel, layout: str, opset: int,
                 requant: dict[str, float] | None = None, float_unfused: bool = False) -> None:
        self.traced, self.frozen, self.layout, self.opset = traced, frozen, layout, opset
        self.requant = requant or {}
        self.float_unfused = float_unfused
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.used: set[str] = {INPUT_NAME, OUTPUT_NAME}
        self.consts: dict[tuple, str] = {}
        self.env: dict[fx.Node, str | list[str]] = {}  # a list: the parts of a chunk
        self.shape_nodes: set[fx.Node] = set()
        self.quantized_input: dict[fx.Node, str] = {}  # layer node → its quantized input (DQ name)
        # packed: no integer kernel can use INT4/INT2 weights, so quantizers stay at the layer
        # inputs, behind a float Clip (see quantize_act).
        self.placements, self.absorbed = plan_placements(traced, frozen) if layout == "qdq" else ({}, set())
        self.placed_ranges = {c: (pl.lo, pl.hi) for pl in self.placements.values() for c in pl.consumers}
        self.stats = OnnxStats()
        self.scaling = self.plan_scaling() if layout == "qdq" else {}

    def plan_scaling(self) -> dict[fx.Node, CodeScaling]:
        """Code scaling (:mod:`srqcli.export.accumulator`) of every layer onnxruntime will fuse
        with a bias: those are the layers whose bias it rounds to int32."""
        plans = {}
        for node in self.traced.gm.graph.nodes:
            fl = self.frozen.layers.get(str(node.target)) if node.op == "call_module" else None
            if fl is None or fl.deploy_bias is None:
                continue
            if not self.ends_quantized(node, fl):
                continue
            lo, hi = self.input_code_range(node, fl)
            plans[node] = plan_code_scaling(fl.deploy_codes.numpy(), fl.scale.numpy(), fl.deploy_bias.numpy(),
                                            fl.input.scalar, hi, _zero_point(lo))
        return plans

    # -- naming and constants ----------------------------------------------------------------
    def fresh(self, base: str) -> str:
        base = base.replace("/", ".") or "t"
        name, i = base, 1
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name

    def init(self, name: str, array: np.ndarray) -> str:
        name = self.fresh(name)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def raw_init(self, name: str, dtype: int, dims: list[int], raw: bytes) -> str:
        name = self.fresh(name)
        self.inits.append(helper.make_tensor(name, dtype, dims, raw, raw=True))
        return name

    def const(self, array: np.ndarray, base: str = "const") -> str:
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self.consts:
            self.consts[key] = self.init(base, array)
        return self.consts[key]

    def op(self, op_type: str, inputs: list[str], base: str, **attrs: Any) -> str:
        out = self.fresh(base)
        # node names are optional: the packed layout (smallest file) leaves them out
        name = self.fresh(f"{base}/{op_type}") if self.layout == "qdq" else None
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    # -- quantization ------------------------------------------------------------------------
    def quantize_act(self, x: str, enc: Encoding, lo: int, hi: int, base: str, *,
                     clip: bool = True, shift: int = 0) -> str:
        """Quantize ``x`` to codes ``lo…hi`` of step ``enc.step``; returns the DQ output.

        ``Q`` (uint8 container, zero point 0 or ``−lo``, saturating) then, when ``lo…hi`` is
        narrower than the container, a ``Clip`` of the integer codes, then ``DQ``: exactly
        ``α·clamp(round(x/α), lo, hi)``. Clipping the uint8/int8 codes keeps onnxruntime's
        fusion of a producing ``Conv → Q`` and a consuming ``DQ → Conv`` (a float ``Clip``
        between conv and ``Q`` blocks it) and costs one cheap byte-wise pass instead of the
        three float passes of ``DQ → Clip → Q`` (ResNet-20 W4A4, batch 1: 0.60 → 0.43 ms).

        ``shift`` (unsigned codes only) stores the codes ``<< shift`` with the step divided by
        ``2^shift`` (same values), for a fused layer's finer bias grid (:mod:`.accumulator`).
        """
        return self.dequantize_codes(self.quantize_codes(x, enc, lo, hi, base, clip=clip), base, shift=shift)

    def quantize_codes(self, x: str, enc: Encoding, lo: int, hi: int, base: str, *,
                       clip: bool = True) -> tuple[str, np.float32, int]:
        """The ``Q`` (and code ``Clip``) of :meth:`quantize_act`: ``(codes, step, zero point)``."""
        offset = _zero_point(lo)
        step = np.float32(enc.scalar)
        scale = self.const(np.array(step, dtype=np.float32), "act_scale")
        zp = self.const(np.array(offset, dtype=np.uint8), f"zp_u8_{offset}")
        if self.layout == "packed":
            # Float Clip to (lo+¼)α … (hi−¼)α before Q: rounds to exactly the same codes, and,
            # being narrower than Q's range, onnxruntime cannot drop it, so no producing conv
            # is fused into QLinearConv (1.32 does that for INT2 weights, then refuses the
            # graph it built).
            bounds = [self.const(np.array((lo + 0.25) * step, dtype=np.float32), "clip_lo"),
                      self.const(np.array((hi - 0.25) * step, dtype=np.float32), "clip_hi")]
            x = self.op("Clip", [x, *bounds], f"{base}.clip")
            clip = False
        q = self.op("QuantizeLinear", [x, scale, zp], f"{base}.q")
        if clip and (lo + offset > 0 or hi + offset < 255):
            bounds = [self.const(np.array(lo + offset, dtype=np.uint8), "code_lo"),
                      self.const(np.array(hi + offset, dtype=np.uint8), "code_hi")]
            q = self.op("Clip", [q, *bounds], f"{base}.clip")
        return q, step, offset

    def dequantize_codes(self, codes: tuple[str, np.float32, int], base: str, *, shift: int = 0) -> str:
        """The ``BitShift`` (when ``shift``) and ``DQ`` of :meth:`quantize_act`."""
        q, step, offset = codes
        zp = self.const(np.array(offset, dtype=np.uint8), f"zp_u8_{offset}")
        if shift:
            q = self.op("BitShift", [q, self.const(np.array(shift, dtype=np.uint8), "shift")], f"{base}.shift",
                        direction="LEFT")
            step = step / np.float32(1 << shift)
        scale = self.const(np.array(step, dtype=np.float32), "act_scale")
        return self.op("DequantizeLinear", [q, scale, zp], f"{base}.dq")

    def weight(self, fl: FrozenLayer, scaling: CodeScaling | None = None, as_float: bool = False) -> str:
        """Dequantized weight tensor name; ``scaling`` multiplies the codes per channel and
        divides the scales by the same factors. ``as_float``: a float32 initializer holding
        exactly what ``DequantizeLinear`` would compute (``float32(code)·scale``)."""
        packed = self.layout == "packed"
        codes = (fl.codes if packed else fl.deploy_codes).numpy()
        # packed: trained codes, a negative γ stays in the scale (INT4 cannot hold −(−8))
        scale = (fl.signed_scale if packed else fl.scale).numpy().astype(np.float32)
        if scaling is not None:
            mult = scaling.weight_mult
            codes = codes * mult.reshape(-1, *([1] * (codes.ndim - 1)))
            scale = (scale / mult.astype(np.float32)).astype(np.float32)
        base = f"{fl.name}.weight"
        if as_float:
            self.stats.weight_types[fl.name] = TensorProto.DataType.Name(TensorProto.FLOAT)
            per_out = scale.reshape(-1, *([1] * (codes.ndim - 1))) if scale.ndim else scale
            return self.init(base, codes.astype(np.float32) * per_out)
        per_channel = fl.weight.per_channel or fl.bn is not None or len(np.unique(scale)) > 1
        bits = fl.weight.bits
        if packed and bits <= 2 and self.opset >= INT2_OPSET:
            dtype, width = TensorProto.INT2, 2
        elif packed and bits <= 4:
            dtype, width = TensorProto.INT4, 4
        else:
            dtype, width = TensorProto.INT8, 8
        self.stats.weight_types[fl.name] = TensorProto.DataType.Name(dtype)
        if width == 8:
            q = self.init(f"{base}.codes", codes.astype(np.int8))
            zp_arr = np.zeros(fl.out_channels if per_channel else (), dtype=np.int8)
            zp = self.init(f"{base}.zero_point", zp_arr)
        else:
            raw = pack_bits(codes.astype(np.int64) & ((1 << width) - 1), width)
            q = self.raw_init(f"{base}.codes", dtype, list(codes.shape), raw)
            n = fl.out_channels if per_channel else 1
            zp_raw = bytes((n * width + 7) // 8)
            zp = self.raw_init(f"{base}.zero_point", dtype, [n] if per_channel else [], zp_raw)
        s = self.init(f"{base}.scale", scale if per_channel else np.array(scale[0], dtype=np.float32))
        attrs = {"axis": 0} if per_channel else {}
        return self.op("DequantizeLinear", [q, s, zp], base, **attrs)

    def bias(self, fl: FrozenLayer, spatial: bool = False) -> str | None:
        """Float bias (``spatial``: shaped ``(C, 1, 1)`` for an ``Add`` after a conv).
        onnxruntime quantizes it to int32 itself when it fuses the layer (on the grid that
        :meth:`plan_scaling` makes fine); an int32 bias in the graph would round it for
        ``ORT_DISABLE_ALL`` too without making fusion any better."""
        if fl.deploy_bias is None:
            return None
        b = fl.deploy_bias.numpy().astype(np.float32)
        name = self.init(f"{fl.name}.bias", b.reshape(-1, 1, 1) if spatial else b)
        self.stats.bias_inputs[fl.name] = name
        return name

    # -- layers ------------------------------------------------------------------------------
    def output_quantized(self, node: fx.Node) -> bool:
        if node in self.placements:
            return True
        users = list(node.users)
        if len(users) == 1:
            bn = self.traced.module(users[0])
            if bn is not None and self.frozen.bn_folds.get(str(node.target)) == str(users[0].target):
                return users[0] in self.placements
        return False

    def ends_quantized(self, node: fx.Node, fl: FrozenLayer) -> bool:
        """Whether the layer's output gets a ``Q`` (so onnxruntime fuses it): the next layer's
        moved input quantizer, the model's own output quantizer, or an opt-in ``--requant``."""
        return self.output_quantized(node) or fl.output is not None or fl.name in self.requant

    def input_code_range(self, node: fx.Node, fl: FrozenLayer) -> tuple[int, int]:
        """The layer's input codes ``lo…hi`` as the graph clips them."""
        return self.placed_ranges.get(node, (fl.input.grid.kmin, fl.input.grid.kmax))

    def quant_layer(self, node: fx.Node, fl: FrozenLayer) -> str:
        x = self.quantized_input.get(node)
        scaling = self.scaling.get(node)
        if x is None:
            x = self.quantize_act(self.value(node.args[0]), fl.input, fl.input.grid.kmin, fl.input.grid.kmax,
                                  f"{fl.name}.input", shift=scaling.act_shift if scaling else 0)
        fused = self.output_quantized(node)
        if fl.output is not None:
            self.stats.quantized_outputs.append(fl.name)
        (self.stats.fused_candidates if fused or fl.output else self.stats.float_output_layers).append(fl.name)
        requant = not fused and not fl.output and fl.name in self.requant
        quantized_out = self.ends_quantized(node, fl)
        # a float-output Gemm still fuses (QGemm), a float-output conv does not
        w = self.weight(fl, scaling, as_float=self.float_unfused and fl.kind == "conv" and not quantized_out)
        # The bias goes into a separate Add where no integer kernel will use it. qdq: a
        # float-output Gemm fuses into QGemm only without a bias input. packed: onnxruntime's
        # basic level would round a DQ → Conv's bias to int32 although nothing fuses (W3A3
        # ResNet-20: 96.4% top-1 agreement with PyTorch instead of 100%); a packed Gemm keeps
        # its bias, without which onnxruntime fuses INT2 weights into a QGemm it then refuses
        # (the logits' rounded bias is at most half an output step off and goes no further).
        separate = fl.deploy_bias is not None and not quantized_out and \
            fl.kind == ("conv" if self.layout == "packed" else "linear")
        b = self.bias(fl, spatial=separate and fl.kind == "conv")
        inputs = [x, w] + ([b] if b and not separate else [])
        name = f"{fl.name}.{fl.kind}" if separate else fl.name
        if fl.kind == "conv":
            y = self.op("Conv", inputs, name, kernel_shape=list(fl.codes.shape[2:]), strides=list(fl.stride),
                        pads=list(fl.padding) * 2, dilations=list(fl.dilation), group=fl.groups)
        else:
            y = self.linear(node, inputs, name)
        if separate:
            y = self.op("Add", [y, b], fl.name)
        if fl.output is not None:  # the model's own output quantizer (--output-bits): exact
            y = self.quantize_act(y, fl.output, fl.output.grid.kmin, fl.output.grid.kmax, f"{fl.name}.output")
        if requant:  # opt-in: int8 Q/DQ on an output PyTorch keeps in float, so the layer fuses
            self.stats.requantized.append(fl.name)
            scale = self.const(np.array(self.requant[fl.name], dtype=np.float32), "requant_scale")
            zp = self.const(np.array(128, dtype=np.uint8), "zp_u8_128")  # signed int8 grid
            q = self.op("QuantizeLinear", [y, scale, zp], f"{fl.name}.requant.q")
            y = self.op("DequantizeLinear", [q, scale, zp], f"{fl.name}.requant.dq")
        return y

    def linear(self, node: fx.Node, inputs: list[str], name: str) -> str:
        shape = self.traced.shape(node.args[0])  # type: ignore[arg-type]
        if shape is not None and len(shape) == 2:
            return self.op("Gemm", inputs, name, transB=1)
        wt = self.op("Transpose", [inputs[1]], f"{name}.weight_t", perm=[1, 0])
        y = self.op("MatMul", [inputs[0], wt], f"{name}.matmul")
        return self.op("Add", [y, inputs[2]], name) if len(inputs) > 2 else y

    def float_layer(self, node: fx.Node, m: nn.Module) -> str:
        name = str(node.target)
        w = m.weight.detach().double()
        b = m.bias.detach().double() if m.bias is not None else None
        bn_name = self.frozen.bn_folds.get(name)
        if bn_name:
            w, b = fold_batchnorm(w, b, self.traced.modules[bn_name])
        inputs = [self.value(node.args[0]), self.init(f"{name}.weight", w.float().numpy())]
        if b is not None:
            inputs.append(self.init(f"{name}.bias", b.float().numpy()))
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise SrqError(f"layer {name}: only integer zero padding can be exported")
            return self.op("Conv", inputs, name, kernel_shape=list(m.kernel_size), strides=list(m.stride),
                           pads=list(m.padding) * 2, dilations=list(m.dilation), group=m.groups)
        return self.linear(node, inputs, name)

    # -- everything else ---------------------------------------------------------------------
    def is_shape_query(self, node: fx.Node) -> bool:
        """``x.size()``, ``x.shape`` and integer arithmetic on them (a channel shuffle's
        ``c // groups``): Python values at trace time, not tensors."""
        if node.op == "call_method" and node.target == "size":
            return True
        if node.op != "call_function":
            return False
        if node.target is getattr:
            return True
        args = [a for a in node.args if isinstance(a, fx.Node)]
        return node.target in _SHAPE_ARITHMETIC and bool(args) and all(a in self.shape_nodes for a in args)

    def value(self, a: Any) -> str:
        if isinstance(a, fx.Node):
            if isinstance(self.env.get(a), list):
                raise SrqError(f"cannot export {a.format_node()}: several tensors used as one")
            if a not in self.env:
                raise SrqError(f"cannot export {a.format_node()}: its value is not a tensor "
                               "(dynamic shapes are not supported)")
            return self.env[a]
        if isinstance(a, (int, float)):
            return self.const(np.array(a, dtype=np.float32))
        raise SrqError(f"cannot export a non-tensor argument {a!r}")

    def reshape(self, node: fx.Node, x: str, base: str) -> str:
        src = node.args[0]
        out = self.traced.shape(node)
        inp = self.traced.shape(src) if isinstance(src, fx.Node) else None
        if out is None:
            raise SrqError(f"cannot export {node.format_node()}: unknown output shape")
        target = list(out)
        if inp is not None and inp and target and inp[0] == target[0] == self.traced.input_shape[0]:
            target[0] = 0  # keep the batch dimension dynamic
            if len(target) == 2:
                return self.op("Flatten", [x], base, axis=1)
        return self.op("Reshape", [x, self.const(np.array(target, dtype=np.int64), "shape")], base)

    def transpose(self, node: fx.Node, base: str) -> str:
        """``x.transpose(a, b)`` (a channel shuffle) as an ONNX ``Transpose``."""
        shape = self.traced.shape(node)
        if shape is None:
            raise SrqError(f"cannot export {node.format_node()}: unknown output shape")
        rank = len(shape)
        a, b = (int(node_arg(node, i, k, None)) % rank for i, k in ((1, "dim0"), (2, "dim1")))
        perm = list(range(rank))
        perm[a], perm[b] = perm[b], perm[a]
        return self.op("Transpose", [self.value(node.args[0])], base, perm=perm)

    def chunk(self, node: fx.Node, base: str) -> list[str]:
        """``x.chunk(n, dim)`` as an ONNX ``Split``; its parts are taken by ``getitem``."""
        src = node.args[0]
        shape = self.traced.shape(src) if isinstance(src, fx.Node) else None
        if shape is None:
            raise SrqError(f"cannot export {node.format_node()}: unknown input shape")
        parts, dim = int(node_arg(node, 1, "chunks", 1)), int(node_arg(node, 2, "dim", 0))
        size = -(-shape[dim] // parts)  # torch.chunk: equal parts of ceil(n/parts), the last smaller
        sizes = [min(size, shape[dim] - i * size) for i in range(parts) if shape[dim] - i * size > 0]
        outs = [self.fresh(f"{base}.{i}") for i in range(len(sizes))]
        name = self.fresh(f"{base}/Split") if self.layout == "qdq" else None
        split = self.const(np.array(sizes, dtype=np.int64), "split")
        self.nodes.append(helper.make_node("Split", [self.value(src), split], outs, name=name, axis=dim))
        return outs

    def pool(self, node: fx.Node, kind: str, x: str, base: str, m: nn.Module | None) -> str:
        def pair(v: Any) -> list[int]:
            return [int(v), int(v)] if isinstance(v, int) else [int(i) for i in v]

        if kind == "maxpool":
            if m is not None:
                k, s, p, d, ceil = m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode
            else:
                k = node_arg(node, 1, "kernel_size", None)
                s = node_arg(node, 2, "stride", None) or k
                p, d = node_arg(node, 3, "padding", 0), node_arg(node, 4, "dilation", 1)
                ceil = node_arg(node, 5, "ceil_mode", False)
            s = s or k
            return self.op("MaxPool", [x], base, kernel_shape=pair(k), strides=pair(s),
                           pads=pair(p) * 2, dilations=pair(d), ceil_mode=int(ceil))
        if kind == "avgpool":
            if m is not None:
                k, s, p = m.kernel_size, m.stride, m.padding
                ceil, cip, div = m.ceil_mode, m.count_include_pad, m.divisor_override
            else:
                k = node_arg(node, 1, "kernel_size", None)
                s = node_arg(node, 2, "stride", None) or k
                p, ceil = node_arg(node, 3, "padding", 0), node_arg(node, 4, "ceil_mode", False)
                cip, div = node_arg(node, 5, "count_include_pad", True), node_arg(node, 6, "divisor_override", None)
            if div:
                raise SrqError(f"{base}: avg_pool2d divisor_override cannot be exported")
            s = s or k
            return self.op("AveragePool", [x], base, kernel_shape=pair(k), strides=pair(s),
                           pads=pair(p) * 2, ceil_mode=int(ceil), count_include_pad=int(cip))
        # adaptive average pooling
        src = self.traced.shape(node.args[0])  # type: ignore[arg-type]
        size = m.output_size if m is not None else node_arg(node, 1, "output_size", None)
        if src is None or len(src) != 4:
            raise SrqError(f"{base}: adaptive pooling needs a 4-D input")
        h, w = src[2], src[3]
        oh, ow = (size, size) if isinstance(size, int) else size
        oh, ow = oh or h, ow or w
        if (oh, ow) == (1, 1):
            return self.spatial_mean(x, base, h * w, keepdims=True)
        if (oh, ow) == (h, w):
            return self.op("Identity", [x], base)
        if h % oh or w % ow:
            raise SrqError(f"{base}: adaptive average pooling from {h}x{w} to {oh}x{ow} is not a "
                           "fixed-window pooling and cannot be exported; change the input size")
        kk = [h // oh, w // ow]
        return self.op("AveragePool", [x], base, kernel_shape=kk, strides=kk)

    def spatial_mean(self, x: str, base: str, count: int, *, keepdims: bool) -> str:
        """The mean over H×W of an NCHW tensor with ``count = H·W``: a pairwise sum in an order
        the file fixes, then one multiply by ``f32(1/count)``.

        onnxruntime's ``GlobalAveragePool`` and ``ReduceMean`` sum in an order that depends on the
        CPU's vector width, so the mean's last bit (and, through the next quantizer, now and then
        a code) differs between machines. Here every level splits the values in two halves and
        adds them elementwise (an odd one out is carried to the next level): each output is a
        fixed tree of IEEE additions, the same bits on every CPU and in the deploy model.
        """
        flat = self.op("Reshape", [x, self.const(np.array([0, 0, count], dtype=np.int64), "shape")], f"{base}.flat")
        n, level = count, 0
        while n > 1:
            half = n // 2
            sizes = [half, half] + [1] * (n % 2)
            parts = [self.fresh(f"{base}.sum{level}.part{i}") for i in range(len(sizes))]
            name = self.fresh(f"{base}.sum{level}/Split") if self.layout == "qdq" else None
            self.nodes.append(helper.make_node("Split", [flat, self.const(np.array(sizes, dtype=np.int64), "split")],
                                               parts, name=name, axis=2))
            flat = self.op("Add", parts[:2], f"{base}.sum{level}")
            if n % 2:
                flat = self.op("Concat", [flat, parts[2]], f"{base}.sum{level}.odd", axis=2)
            n, level = half + n % 2, level + 1
        total = self.op("Mul", [flat, self.const(np.array(1.0 / count, dtype=np.float32), "inv_count")],
                        f"{base}.mean")
        shape = [0, 0, 1, 1] if keepdims else [0, 0]
        return self.op("Reshape", [total, self.const(np.array(shape, dtype=np.int64), "shape")], base)

    def clip(self, x: str, lo: float, hi: float, base: str) -> str:
        return self.op("Clip", [x, self.const(np.array(lo, dtype=np.float32), "clip_lo"),
                                self.const(np.array(hi, dtype=np.float32), "clip_hi")], base)

    def transparent(self, node: fx.Node, op: NodeOp, x: str, base: str) -> str:
        m = self.traced.module(node)
        if op.kind == "relu":
            return self.op("Relu", [x], base)
        if op.kind == "clip":
            return self.clip(x, op.lo, op.hi, base)
        if op.kind == "maxpool":
            return self.pool(node, "maxpool", x, base, m)
        if op.kind in ("flatten", "reshape"):
            return self.reshape(node, x, base)
        return x  # noop

    def generic(self, node: fx.Node) -> str:
        base = str(node.target) if node.op == "call_module" else node.name
        m = self.traced.module(node)
        op = classify(node, self.traced)
        if op.kind in TRANSPARENT:
            return self.transparent(node, op, self.value(node.args[0]), base)
        t = node.target
        if m is not None:
            x = self.value(node.args[0])
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                g, h = bn_affine(m)
                return self.op("BatchNormalization", [
                    x, self.init(f"{base}.scale", g.float().numpy()), self.init(f"{base}.bias", h.float().numpy()),
                    self.init(f"{base}.mean", np.zeros(len(g), np.float32)),
                    self.init(f"{base}.var", np.ones(len(g), np.float32))], base, epsilon=0.0)
            if isinstance(m, nn.AvgPool2d):
                return self.pool(node, "avgpool", x, base, m)
            if isinstance(m, nn.AdaptiveAvgPool2d):
                return self.pool(node, "adaptive", x, base, m)
            if isinstance(m, nn.Sigmoid):
                return self.op("Sigmoid", [x], base)
            if isinstance(m, nn.SiLU):
                return self.op("Mul", [x, self.op("Sigmoid", [x], f"{base}.sigmoid")], base)
            if isinstance(m, nn.Hardswish):
                return self.op("HardSwish", [x], base)
            if isinstance(m, nn.Hardsigmoid):
                return self.op("HardSigmoid", [x], base, alpha=1.0 / 6, beta=0.5)
            if isinstance(m, nn.Tanh):
                return self.op("Tanh", [x], base)
            if isinstance(m, nn.Softmax):
                return self.op("Softmax", [x], base, axis=int(m.dim if m.dim is not None else -1))
            raise SrqError(f"cannot export module {base} ({type(m).__name__}): not supported by srq's ONNX export")
        if node.op == "call_function" or node.op == "call_method":
            name = t if isinstance(t, str) else getattr(t, "__name__", str(t))
            if t in (operator.add, operator.iadd, torch.add) or name in ("add", "add_", "__add__", "__iadd__"):
                if node.kwargs.get("alpha", 1) != 1:
                    raise SrqError(f"cannot export {node.format_node()}: add with alpha")
                return self.op("Add", [self.value(node.args[0]), self.value(node.args[1])], base)
            if t in (operator.mul, operator.imul, torch.mul) or name in ("mul", "mul_"):
                return self.op("Mul", [self.value(node.args[0]), self.value(node.args[1])], base)
            if t is operator.getitem and isinstance(self.env.get(node.args[0]), list):
                return self.env[node.args[0]][int(node.args[1])]  # one part of a chunk/split
            if t is torch.transpose or name == "transpose":
                return self.transpose(node, base)
            if t is torch.chunk or name == "chunk":
                return self.chunk(node, base)
            if t in (torch.cat, torch.concat):
                tensors = node.args[0]
                dim = int(node_arg(node, 1, "dim", 0))
                return self.op("Concat", [self.value(a) for a in tensors], base, axis=dim)  # type: ignore[union-attr]
            if t in (F.adaptive_avg_pool2d,):
                return self.pool(node, "adaptive", self.value(node.args[0]), base, None)
            if t in (F.avg_pool2d,):
                return self.pool(node, "avgpool", self.value(node.args[0]), base, None)
            if t in (torch.sigmoid, F.sigmoid) or name == "sigmoid":
                return self.op("Sigmoid", [self.value(node.args[0])], base)
            if t in (F.silu,):
                x = self.value(node.args[0])
                return self.op("Mul", [x, self.op("Sigmoid", [x], f"{base}.sigmoid")], base)
            if t in (F.hardswish,):
                return self.op("HardSwish", [self.value(node.args[0])], base)
            if t in (torch.mean,) or name == "mean":
                dims = node_arg(node, 1, "dim", None)
                keep = bool(node_arg(node, 2, "keepdim", False))
                dims = [dims] if isinstance(dims, int) else list(dims)
                x = self.value(node.args[0])
                src = self.traced.shape(node.args[0])  # type: ignore[arg-type]
                if src is not None and len(src) == 4 and sorted(d % 4 for d in dims) == [2, 3]:
                    return self.spatial_mean(x, base, src[2] * src[3], keepdims=keep)
                if self.opset >= 18:
                    return self.op("ReduceMean", [x, self.const(np.array(dims, dtype=np.int64), "axes")],
                                   base, keepdims=int(keep))
                return self.op("ReduceMean", [x], base, axes=dims, keepdims=int(keep))
        raise SrqError(f"cannot export {node.format_node()}: operation not supported by srq's ONNX export")

    # -- driver ------------------------------------------------------------------------------
    def build(self) -> onnx.GraphProto:
        output: str | None = None
        for node in self.traced.gm.graph.nodes:
            if node.op == "placeholder":
                if self.env:
                    raise SrqError("cannot export a model with more than one input")
                self.env[node] = INPUT_NAME
                continue
            if node.op == "get_attr":
                raise SrqError(f"cannot export {node.format_node()}: parameters used outside layers")
            if node.op == "output":
                out = node.args[0]
                if not isinstance(out, fx.Node):
                    raise SrqError("cannot export a model that returns several outputs")
                output = self.env[out]
                continue
            if node in self.absorbed:
                continue
            if self.is_shape_query(node):
                self.shape_nodes.add(node)
                continue  # shape queries feed view/reshape, which use the traced static shape
            m = self.traced.module(node)
            name = str(node.target)
            if m is not None and is_quant_layer(m):
                y = self.quant_layer(node, self.frozen.layers[name])
            elif m is not None and isinstance(m, (nn.Conv2d, nn.Linear)):
                y = self.float_layer(node, m)
            elif m is not None and name in self.frozen.bn_folds.values() and \
                    self.frozen.bn_folds.get(str(node.args[0].target)) == name:
                y = self.env[node.args[0]]  # folded into the layer before
            else:
                y = self.generic(node)
            self.env[node] = y
            if node in self.placements:
                self.place(node, y)
        if output is None:
            raise SrqError("cannot export: the traced model has no output")
        if output == INPUT_NAME:
            self.nodes.append(helper.make_node("Identity", [output], [OUTPUT_NAME], name="output"))
        else:  # name the output tensor "logits"
            for n in self.nodes:
                n.input[:] = [OUTPUT_NAME if i == output else i for i in n.input]
                n.output[:] = [OUTPUT_NAME if o == output else o for o in n.output]
        shape = list(self.traced.input_shape)
        inp = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", *shape[1:]])
        out_shape = self.traced.shape(next(n for n in self.traced.gm.graph.nodes if n.op == "output").args[0])
        dims = ["N", *out_shape[1:]] if out_shape else None
        outp = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, dims)
        return helper.make_graph(self.nodes, "srq", [inp], [outp], initializer=self.inits)

    def place(self, node: fx.Node, y: str) -> None:
        """Emit a moved quantizer on ``y`` and the transparent ops after it; layers sharing
        the quantizer share its codes and differ at most in their code shift."""
        pl = self.placements[node]
        base = f"{pl.consumers[0].target}.input"
        moves = [c for c in pl.chain if classify(c, self.traced).kind not in ("relu", "clip", "noop")]
        codes = self.quantize_codes(y, pl.encoding, pl.lo, pl.hi, base)
        if moves:  # data movement on grid values: re-quantize (exact) so the layer sees DQ;
            # the Clip changes no value but bounds the stored codes visibly (.pair_bound)
            x = self.dequantize_codes(codes, base)
            for c in moves:  # relu/clip/noop are absorbed into the code range
                x = self.transparent(c, classify(c, self.traced), x, f"{base}.{c.name}")
            base = f"{base}.re"
            codes = self.quantize_codes(x, pl.encoding, pl.lo, pl.hi, base)
        by_shift: dict[int, str] = {}
        for consumer in pl.consumers:
            scaling = self.scaling.get(consumer)
            shift = scaling.act_shift if scaling else 0
            if shift not in by_shift:
                by_shift[shift] = self.dequantize_codes(codes, base, shift=shift)
            self.quantized_input[consumer] = by_shift[shift]


def build_onnx(traced: TracedModel, frozen: FrozenModel, *, layout: str = "qdq", opset: int | None = None,
               metadata: dict[str, str] | None = None, requant: dict[str, float] | None = None,
               float_unfused: bool = False) -> tuple[onnx.ModelProto, OnnxStats]:
    """The ONNX model of a traced, frozen quantized model (not yet checked).

    ``requant`` (opt-in, ``qdq`` layout): layer name → int8 step for layers whose output the
    PyTorch model keeps in float (residual branches, inputs of average pooling); a
    ``Q → DQ`` on that output lets onnxruntime fuse the layer too, at the price of an 8-bit
    rounding PyTorch does not do. See :func:`srqcli.export.workflow.calibrate_requant`.
    ``float_unfused`` (opt-in, ``qdq`` layout): convs whose output stays float get float32
    weights (same values) instead of int8 codes and ``DequantizeLinear`` (module docstring).
    """
    opset = check_opset(layout, opset)
    if requant and layout != "qdq":
        raise SrqError("--requant applies to the qdq layout only (packed layers never fuse)")
    if float_unfused and layout != "qdq":
        raise SrqError("--float-unfused applies to the qdq layout only (the packed layout is for size)")
    builder = _Builder(traced, frozen, layout, opset, requant, float_unfused)
    graph = builder.build()
    ops = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=ops, producer_name="srq",
                              ir_version=helper.find_min_ir_version_for(ops))
    if metadata:
        helper.set_model_props(model, metadata)
    return model, builder.stats


def output_layer(traced: TracedModel, frozen: FrozenModel) -> FrozenLayer | None:
    """The quantized layer whose output is the model output (through BN/flatten/dropout-like
    ops), or ``None``."""
    name = model_output_layer(traced, set(frozen.layers))
    return frozen.layers[name] if name is not None else None


def output_step(traced: TracedModel, frozen: FrozenModel) -> float | None:
    """Resolution of the model output, ``α_x·max_c scale_c`` of :func:`output_layer` (the
    accumulator step of the last layer), or ``None``."""
    fl = output_layer(traced, frozen)
    return float(np.float32(fl.input.scalar) * fl.scale.abs().max().item()) if fl is not None else None
