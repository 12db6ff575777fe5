"""The deploy model: srq's exported ONNX graph, run in PyTorch as onnxruntime runs it.

The exported file is the product, so the model srq reports on is the file itself. This
module compiles an srq ONNX graph (``qdq`` layout) into a PyTorch module that computes what
onnxruntime's CPU provider computes at its default optimisation level:

* every group ``DQ(x) → Conv/Gemm(DQ(w), bias) → Q`` that onnxruntime fuses into an integer
  kernel (``QLinearConv``, ``QGemm``) is computed with that kernel's integer arithmetic
  (:mod:`srqcli.deploy.kernels`); so is a ``DQ(x) → Gemm(DQ(w))`` without bias or ``Q`` (a
  float-output ``QGemm``);
* ``QuantizeLinear``, ``DequantizeLinear``, the ``Clip``/``BitShift`` of codes, ``Add``,
  ``Mul``, ``Relu``, ``MaxPool`` and the shape ops are single IEEE float32 or integer
  operations, identical in both;
* ops with a reduction or a transcendental function (a float ``Conv`` onnxruntime does not
  fuse, windowed average pooling, ``Sigmoid``) run in float32 in PyTorch (srq's exporter writes
  a global mean as a fixed tree of ``Add`` nodes instead, see
  :meth:`srqcli.export.to_onnx._Builder.spatial_mean`); onnxruntime may sum in
  another order or approximate the function, so their results can differ in the last bit, and
  where such a value meets a rounding tie the next code can differ. :func:`exactness` names
  them, and verification reports how many output codes differ.

Which groups fuse follows onnxruntime's QDQ rules for the patterns srq writes; verification
compares the number of fused groups with the integer kernels onnxruntime actually executes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import Tensor, nn

from srqcli.deploy import kernels
from srqcli.errors import SrqError

#: ops computed exactly alike by PyTorch and onnxruntime (one IEEE operation per element, or
#: integer/data movement)
EXACT_OPS = {"QuantizeLinear", "DequantizeLinear", "Clip", "BitShift", "Add", "Mul", "Relu", "MaxPool",
             "Flatten", "Reshape", "Transpose", "Split", "Concat", "Identity"}
#: integer kernel types onnxruntime runs for fused groups
FUSED_KERNELS = {"Conv": "QLinearConv", "Gemm": "QGemm"}

_INT_TYPES = {onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT8: "int8", onnx.TensorProto.INT32: "int32",
              onnx.TensorProto.INT4: "int4", onnx.TensorProto.INT2: "int2"}


@dataclass
class FusedLayer:
    """One integer kernel: where its codes come from and what it writes."""

    node: onnx.NodeProto  # the Conv or Gemm
    x: str  # input codes
    x_scale: str
    x_zero_point: str
    w: str  # weight codes (initializer)
    w_scale: str
    bias: Tensor | None  # int32 bias codes, float64 carrier
    output: str  # output codes (the Q's output) or, float-output QGemm, the Gemm's output
    y_scale: str | None = None
    y_zero_point: str | None = None
    container: str = "uint8"


@dataclass
class BiasGrid:
    """The bias a fused layer really adds: ``codes·step`` per output channel."""

    codes: Tensor  # int32 bias codes, float64 carrier
    step: Tensor  # float32 accumulator step f32(x_scale·w_scale_c), per channel
    output_step: Tensor | None  # float32 step of the layer's output codes (y_scale)

    @property
    def value(self) -> Tensor:
        """``codes·step`` in float64 (exact for codes below 2^29 in magnitude: a 24-bit float32 step times the code)."""
        return self.codes * self.step.double()


@dataclass
class DeployPlan:
    """What the compiled graph does: which layers are integer kernels and which ops are not
    computed bit-identically (with the reason)."""

    fused: list[str] = field(default_factory=list)
    float_layers: list[str] = field(default_factory=list)  # Conv/Gemm run with float kernels
    inexact: dict[str, str] = field(default_factory=dict)  # node name → op type

    @property
    def exact(self) -> bool:
        return not self.inexact


class DeployModel(nn.Module):
    """An srq ONNX file as a PyTorch module (see the module docstring)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        self.input_name = graph.input[0].name
        self.output_names = [o.name for o in graph.output]
        self.consts: dict[str, Tensor] = {}
        self.container: dict[str, str] = {}
        for t in graph.initializer:
            self._const(t.name, numpy_helper.to_array(t), t.data_type)
        self.steps: list[Callable[[dict[str, Tensor]], None]] = []
        self.plan = DeployPlan()
        self.fused_layers: list[FusedLayer] = []
        self._compile(graph)

    # -- constants -------------------------------------------------------------------------
    def _const(self, name: str, array: np.ndarray, data_type: int) -> None:
        if data_type in _INT_TYPES:
            self.consts[name] = torch.from_numpy(array.astype(np.float64))
            self.container[name] = _INT_TYPES[data_type]
        elif array.dtype.kind == "f":
            self.consts[name] = torch.from_numpy(array.astype(np.float32))
        else:
            self.consts[name] = torch.from_numpy(np.array(array))

    def const(self, name: str) -> Tensor:
        if name not in self.consts:
            raise SrqError(f"the deploy model needs {name!r} to be a constant of the file")
        return self.consts[name]

    # -- compilation -----------------------------------------------------------------------
    def _compile(self, graph: onnx.GraphProto) -> None:
        producer = {o: n for n in graph.node for o in n.output}
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        outputs = set(self.output_names)
        fused: dict[int, FusedLayer] = {}
        absorbed: set[int] = set()  # Q nodes computed by their fused layer
        for n in graph.node:
            if n.op_type in FUSED_KERNELS:
                f = self._fusion(n, producer, consumers, outputs)
                if f is not None:
                    fused[id(n)] = f
                    self.fused_layers.append(f)
                    if f.y_scale is not None:
                        absorbed.add(id(consumers[n.output[0]][0]))
        for n in graph.node:
            if id(n) in absorbed:
                continue
            if id(n) in fused:
                self.steps.append(self._fused_step(fused[id(n)]))
                self.plan.fused.append(n.name or n.output[0])
                continue
            if n.op_type in FUSED_KERNELS:
                self.plan.float_layers.append(n.name or n.output[0])
            if n.op_type not in EXACT_OPS:
                self.plan.inexact[n.name or n.output[0]] = n.op_type
            self.steps.append(self._op_step(n))

    def _dq_of(self, name: str, producer: dict, *, const: bool) -> onnx.NodeProto | None:
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        if (dq.input[0] in self.consts) != const:
            return None
        return dq

    def _fusion(self, n: onnx.NodeProto, producer: dict, consumers: dict, outputs: set[str]) -> FusedLayer | None:
        """The integer kernel onnxruntime makes of ``n``, or ``None`` when it stays float."""
        x_dq = self._dq_of(n.input[0], producer, const=False)
        w_dq = self._dq_of(n.input[1], producer, const=True)
        if x_dq is None or w_dq is None or self.container.get(w_dq.input[0]) != "int8":
            return None
        attrs = _attrs(n)
        if n.op_type == "Gemm" and (attrs.get("transA", 0) or not attrs.get("transB", 0)
                                    or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            return None
        users = consumers.get(n.output[0], [])
        q = users[0] if len(users) == 1 and users[0].op_type == "QuantizeLinear" \
            and n.output[0] not in outputs else None
        has_bias = len(n.input) > 2 and n.input[2]
        if q is None and (n.op_type != "Gemm" or has_bias):
            return None  # a float-output conv, or a Gemm with a float bias: float kernels
        bias = self._bias(n, x_dq, w_dq, producer) if has_bias else None
        f = FusedLayer(n, x_dq.input[0], x_dq.input[1], _zp(x_dq), w_dq.input[0], w_dq.input[1], bias,
                       output=q.output[0] if q is not None else n.output[0])
        if q is not None:
            f.y_scale, f.y_zero_point = q.input[1], _zp(q)
            f.container = self.container.get(f.y_zero_point, "uint8")
            self.container[f.output] = f.container
        return f

    def _bias(self, n: onnx.NodeProto, x_dq, w_dq, producer: dict) -> Tensor:
        """int32 bias codes: an int32 initializer behind a ``DequantizeLinear`` (as srq writes
        it), or a float bias rounded to the accumulator grid as onnxruntime rounds it."""
        b_dq = self._dq_of(n.input[2], producer, const=True)
        if b_dq is not None and self.container.get(b_dq.input[0]) == "int32":
            return self.const(b_dq.input[0])
        b = self.const(n.input[2])
        step = self.const(x_dq.input[1]).float() * self.const(w_dq.input[1]).float()
        return torch.round(b.float() / step).double()

    def bias_grids(self) -> dict[str, BiasGrid]:
        """The int32 bias of every fused layer that has one, by the name of the float bias
        initializer onnxruntime rounds: what the file really adds (:mod:`srqcli.deploy.snap`)."""
        grids = {}
        for f in self.fused_layers:
            if f.bias is None or len(f.node.input) < 3:
                continue
            step = self.const(f.x_scale).float() * self.const(f.w_scale).float()
            grids[f.node.input[2]] = BiasGrid(f.bias, step.expand(f.bias.shape).clone(),
                                              self.const(f.y_scale).float() if f.y_scale else None)
        return grids

    def _fused_step(self, f: FusedLayer) -> Callable[[dict[str, Tensor]], None]:
        conv = _conv_geometry(f.node, _attrs(f.node)) if f.node.op_type == "Conv" else None
        w = self.const(f.w)
        w_scale, x_scale = self.const(f.w_scale), self.const(f.x_scale)
        x_zp = self.const(f.x_zero_point)

        def run(env: dict[str, Tensor]) -> None:
            acc = kernels.accumulate(env[f.x], x_zp, w, f.bias, conv)
            if f.y_scale is None:
                scale = kernels.per_channel(x_scale.float() * w_scale.float(), acc.dim())
                env[f.output] = acc.float() * scale
                return
            scale = kernels.per_channel(kernels.output_scale(x_scale, w_scale, self.const(f.y_scale)), acc.dim())
            env[f.output] = kernels.requantize(acc, scale, self.const(f.y_zero_point), f.container)
        return run

    def _op_step(self, n: onnx.NodeProto) -> Callable[[dict[str, Tensor]], None]:
        impl = _OPS.get(n.op_type)
        if impl is None:
            raise SrqError(f"the deploy model cannot run ONNX op {n.op_type} ({n.name or n.output[0]})")
        attrs = _attrs(n)
        if n.op_type == "QuantizeLinear":
            self.container[n.output[0]] = self.container.get(_zp(n), "uint8")
        elif n.op_type in ("Clip", "BitShift") and n.input[0] in self.container:
            self.container[n.output[0]] = self.container[n.input[0]]
        model = self

        def run(env: dict[str, Tensor]) -> None:
            args = [env[i] if i in env else model.consts.get(i) if i else None for i in n.input]
            out = impl(model, n, attrs, *args)
            if isinstance(out, (list, tuple)):
                for name, value in zip(n.output, out):
                    env[name] = value
            else:
                env[n.output[0]] = out
        return run

    # -- running ---------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        env: dict[str, Tensor] = {self.input_name: x.float()}
        for step in self.steps:
            step(env)
        return env[self.output_names[0]]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv_geometry(node: onnx.NodeProto, attrs: dict) -> dict:
    """``F.conv2d`` keyword arguments of an ONNX ``Conv`` (integer or float kernel alike)."""
    k = len(attrs.get("kernel_shape", [])) or 2
    pads = list(attrs.get("pads", [0] * 2 * k))
    if pads[:k] != pads[k:]:
        raise SrqError(f"the deploy model cannot run asymmetric padding ({node.name or node.output[0]})")
    return {"stride": list(attrs.get("strides", [1] * k)), "padding": pads[:k],
            "dilation": list(attrs.get("dilations", [1] * k)), "groups": int(attrs.get("group", 1))}


def _zp(node: onnx.NodeProto) -> str:
    if len(node.input) < 3 or not node.input[2]:
        raise SrqError(f"the deploy model needs an explicit zero point on {node.name or node.output[0]}")
    return node.input[2]


def _axis_shape(scale: Tensor, ndim: int, axis: int) -> Tensor:
    if scale.dim() == 0:
        return scale
    shape = [1] * ndim
    shape[axis] = -1
    return scale.reshape(shape)


def _quantize(m: DeployModel, n, attrs, x, scale, zp):
    axis = attrs.get("axis", 1)
    container = m.container.get(n.input[2], "uint8")
    return kernels.quantize_linear(x, _axis_shape(scale, x.dim(), axis), _axis_shape(zp, x.dim(), axis), container)


def _dequantize(m: DeployModel, n, attrs, codes, scale, zp=None):
    axis = attrs.get("axis", 1)
    zp = torch.zeros((), dtype=torch.float64) if zp is None else zp
    return kernels.dequantize_linear(codes, _axis_shape(scale, codes.dim(), axis), _axis_shape(zp, codes.dim(), axis))


def _clip(m, n, attrs, x, lo=None, hi=None):
    if lo is not None:
        x = torch.maximum(x, lo.to(x.dtype))
    if hi is not None:
        x = torch.minimum(x, hi.to(x.dtype))
    return x


def _bitshift(m, n, attrs, x, s):
    if attrs.get("direction") != b"LEFT" and attrs.get("direction") != "LEFT":
        raise SrqError(f"the deploy model only runs left shifts ({n.name})")
    return x * float(2 ** int(s))


def _conv(m, n, attrs, x, w, b=None):
    return F.conv2d(x, w, b, **_conv_geometry(n, attrs))


def _gemm(m, n, attrs, a, b, c=None):
    a = a.t() if attrs.get("transA", 0) else a
    b = b.t() if attrs.get("transB", 0) else b
    y = attrs.get("alpha", 1.0) * (a @ b)
    return y + attrs.get("beta", 1.0) * c if c is not None else y


def _pool_args(attrs) -> dict:
    k = list(attrs["kernel_shape"])
    pads = list(attrs.get("pads", [0] * 2 * len(k)))
    return {"kernel_size": k, "stride": list(attrs.get("strides", [1] * len(k))), "padding": pads[:len(k)],
            "ceil_mode": bool(attrs.get("ceil_mode", 0))}


def _maxpool(m, n, attrs, x):
    return F.max_pool2d(x, dilation=list(attrs.get("dilations", [1, 1])), **_pool_args(attrs))


def _avgpool(m, n, attrs, x):
    return F.avg_pool2d(x, count_include_pad=bool(attrs.get("count_include_pad", 0)), **_pool_args(attrs))


def _reshape(m, n, attrs, x, shape):
    target = [x.shape[i] if int(s) == 0 else int(s) for i, s in enumerate(shape.tolist())]
    return x.reshape(target)


def _split(m, n, attrs, x, split=None):
    axis = attrs.get("axis", 0)
    sizes = [int(s) for s in split.tolist()] if split is not None else x.shape[axis] // len(n.output)
    return torch.split(x, sizes, dim=axis)


def _reduce_mean(m, n, attrs, x, axes=None):
    dims = [int(a) for a in axes.tolist()] if axes is not None else list(attrs["axes"])
    return x.mean(dim=dims, keepdim=bool(attrs.get("keepdims", 1)))


def _batchnorm(m, n, attrs, x, scale, bias, mean, var):
    shape = [1, -1] + [1] * (x.dim() - 2)
    inv = scale / torch.sqrt(var + attrs.get("epsilon", 1e-5))
    return (x - mean.reshape(shape)) * inv.reshape(shape) + bias.reshape(shape)


_OPS: dict[str, Callable] = {
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "Clip": _clip,
    "BitShift": _bitshift,
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda m, n, attrs, a, b: a @ b,
    "Add": lambda m, n, attrs, a, b: a + b,
    "Mul": lambda m, n, attrs, a, b: a * b,
    "Relu": lambda m, n, attrs, x: torch.relu(x),
    "Sigmoid": lambda m, n, attrs, x: torch.sigmoid(x),
    "Tanh": lambda m, n, attrs, x: torch.tanh(x),
    "HardSwish": lambda m, n, attrs, x: F.hardswish(x),
    "HardSigmoid": lambda m, n, attrs, x: torch.clamp(attrs.get("alpha", 0.2) * x + attrs.get("beta", 0.5), 0, 1),
    "Softmax": lambda m, n, attrs, x: torch.softmax(x, dim=attrs.get("axis", -1)),
    "MaxPool": _maxpool,
    "AveragePool": _avgpool,
    "GlobalAveragePool": lambda m, n, attrs, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "ReduceMean": _reduce_mean,
    "Flatten": lambda m, n, attrs, x: x.reshape(int(np.prod(x.shape[:attrs.get("axis", 1)])), -1),
    "Reshape": _reshape,
    "Transpose": lambda m, n, attrs, x: x.permute(*attrs["perm"]),
    "Split": _split,
    "Concat": lambda m, n, attrs, *xs: torch.cat(xs, dim=attrs["axis"]),
    "Identity": lambda m, n, attrs, x: x,
    "BatchNormalization": _batchnorm,
}
