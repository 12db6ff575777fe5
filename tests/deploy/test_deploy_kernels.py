"""The deploy model's integer kernels against onnxruntime, one layer at a time: equal codes.

Each model is ``Q → DQ → Conv/Gemm(DQ(w), bias) → Q → DQ`` with random codes, which
onnxruntime fuses into ``QLinearConv``/``QGemm``. Requantization scales of 0.5 and 0.25 put
a large share of the requantized values on rounding ties, so half-to-even rounding, the order
of the scale product and the float bias rounding are all exercised.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from srqcli.deploy import kernels
from srqcli.deploy.graph import DeployModel
from srqcli.export.verify import executed_op_types, ort_session, run_onnx

C, O, K, HW = 8, 8, 3, 9


def one_layer(kind: str, *, x_scale: float, w_scale: np.ndarray, y_scale: float | None, bias: str,
              w: np.ndarray, b: np.ndarray, x_zp: int = 0, y_zp: int = 3, groups: int = 1) -> onnx.ModelProto:
    """A fused-layer ONNX model; ``bias``: ``none``, ``float`` or ``int32`` (DQ of int32 codes)."""
    xs, ys = np.float32(x_scale), np.float32(y_scale or 1.0)
    inits = [numpy_helper.from_array(np.array(xs), "xs"), numpy_helper.from_array(np.array(x_zp, np.uint8), "xzp"),
             numpy_helper.from_array(w, "w"), numpy_helper.from_array(w_scale, "ws"),
             numpy_helper.from_array(np.zeros(len(w_scale), np.int8), "wzp"),
             numpy_helper.from_array(np.array(ys), "ys"), numpy_helper.from_array(np.array(y_zp, np.uint8), "yzp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xzp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wzp"], ["wd"], axis=0)]
    step = (xs * w_scale).astype(np.float32)
    inputs = ["xd", "wd"]
    if bias == "float":
        inits.append(numpy_helper.from_array(b.astype(np.float32), "b"))
        inputs.append("b")
    elif bias == "int32":
        inits += [numpy_helper.from_array(b.astype(np.int32), "bq"), numpy_helper.from_array(step, "bs"),
                  numpy_helper.from_array(np.zeros(len(b), np.int32), "bzp")]
        nodes.append(helper.make_node("DequantizeLinear", ["bq", "bs", "bzp"], ["b"], axis=0))
        inputs.append("b")
    if kind == "conv":
        nodes.append(helper.make_node("Conv", inputs, ["y"], pads=[1] * 4, strides=[2, 2], group=groups))
        shape = [None, C, HW, HW]
    else:
        nodes.append(helper.make_node("Gemm", inputs, ["y"], transB=1))
        shape = [None, C]
    out = "y"
    if y_scale is not None:
        nodes += [helper.make_node("QuantizeLinear", ["y", "ys", "yzp"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "ys", "yzp"], ["out"])]
        out = "out"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def random_layer(kind: str, seed: int, groups: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (O, C // groups, K, K) if kind == "conv" else (O, C)
    w = rng.integers(-7, 8, shape).astype(np.int8)
    w_scale = (rng.random(O) * 0.02 + 0.005).astype(np.float32)
    return w, w_scale, rng.normal(0, 0.3, O).astype(np.float32)


def codes_input(x_scale: float, n: int, kind: str, seed: int, x_zp: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + 100)
    shape = (n, C, HW, HW) if kind == "conv" else (n, C)
    return ((rng.integers(0, 16, shape) - x_zp).astype(np.float32) * np.float32(x_scale)).astype(np.float32)


def run_both(model: onnx.ModelProto, x: np.ndarray, tmp_path) -> tuple[np.ndarray, np.ndarray, DeployModel]:
    path = tmp_path / "layer.onnx"
    onnx.save(model, path)
    ort_out = run_onnx(ort_session(path, "default"), x)
    deploy = DeployModel(model)
    with torch.no_grad():
        return ort_out, deploy(torch.from_numpy(x)).numpy(), deploy


@pytest.mark.parametrize("kind,groups", [("conv", 1), ("conv", 2), ("conv", C), ("gemm", 1)])
@pytest.mark.parametrize("bias", ["none", "float", "int32"])
@pytest.mark.parametrize("y_scale", [0.125, 0.0625, 0.0517])
def test_fused_layer_equals_onnxruntime(kind, groups, bias, y_scale, tmp_path):
    w, w_scale, b = random_layer(kind, seed=groups, groups=groups)
    x_scale = 0.125 if y_scale in (0.125, 0.0625) else 0.037  # power-of-two scales: many ties
    if y_scale in (0.125, 0.0625):
        w_scale = np.full(O, 0.5, np.float32)
    b_codes = np.round(b / (np.float32(x_scale) * w_scale)).astype(np.int32)
    b_value = (b_codes.astype(np.float32) * np.float32(x_scale) * w_scale + 0.4 * np.float32(x_scale) * w_scale)
    model = one_layer(kind, x_scale=x_scale, w_scale=w_scale, y_scale=y_scale, bias=bias, w=w,
                      b=b_codes if bias == "int32" else b_value, groups=groups)
    x = codes_input(x_scale, 16, kind, seed=groups)
    ort_out, deployed, deploy = run_both(model, x, tmp_path)
    assert deploy.plan.fused and not deploy.plan.float_layers
    assert np.array_equal(ort_out, deployed), f"{(ort_out != deployed).sum()} of {ort_out.size} differ"
    ops = executed_op_types(tmp_path / "layer.onnx", tmp_path)
    assert ops.get("QLinearConv" if kind == "conv" else "QGemm") == 1, ops


def test_ties_are_exercised():
    """The power-of-two scales above do put values on ties (else the test proves little)."""
    w, _, _ = random_layer("conv", 1)
    x = torch.from_numpy(np.round(codes_input(0.125, 4, "conv", 1) / np.float32(0.125))).double()
    acc = kernels.accumulate(x, torch.tensor(0.0), torch.from_numpy(w), None,
                             {"stride": [2, 2], "padding": [1, 1], "dilation": [1, 1], "groups": 1})
    v = acc.float() * kernels.output_scale(torch.tensor(0.125), torch.tensor(0.5), torch.tensor(0.125))
    assert ((v - v.floor()) == 0.5).float().mean() > 0.3


def test_float_output_gemm_equals_onnxruntime(tmp_path):
    """``DQ → Gemm(DQ(w))`` without bias or Q: a float-output QGemm."""
    w, w_scale, _ = random_layer("gemm", 3)
    model = one_layer("gemm", x_scale=0.037, w_scale=w_scale, y_scale=None, bias="none", w=w, b=np.zeros(O))
    x = codes_input(0.037, 32, "gemm", 3)
    ort_out, deployed, deploy = run_both(model, x, tmp_path)
    assert deploy.plan.fused == ["y"] or len(deploy.plan.fused) == 1
    assert np.array_equal(ort_out, deployed)


def test_signed_input_zero_point(tmp_path):
    """uint8 input codes with zero point 8 (a signed 4-bit grid as srq stores it)."""
    w, w_scale, b = random_layer("conv", 4)
    model = one_layer("conv", x_scale=0.05, w_scale=w_scale, y_scale=0.09, bias="float", w=w, b=b, x_zp=8)
    x = codes_input(0.05, 8, "conv", 4, x_zp=8)
    ort_out, deployed, _ = run_both(model, x, tmp_path)
    assert np.array_equal(ort_out, deployed)


def test_quantize_linear_rounds_half_to_even():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 300.0, -3.0])
    codes = kernels.quantize_linear(x, torch.tensor(1.0), torch.tensor(0.0), "uint8")
    assert codes.tolist() == [0, 2, 2, 0, 0, 255, 0]
    codes = kernels.quantize_linear(x, torch.tensor(1.0), torch.tensor(0.0), "int8")
    assert codes.tolist() == [0, 2, 2, 0, -2, 127, -3]


def test_requantize_saturates_and_rounds_half_to_even():
    acc = torch.tensor([1.0, 3.0, 5.0, -1.0, 1e6, -1e6], dtype=torch.float64)
    out = kernels.requantize(acc, torch.tensor(0.5), torch.tensor(10.0), "uint8")
    assert out.tolist() == [10, 12, 12, 10, 255, 0]
