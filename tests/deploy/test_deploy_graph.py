"""The deploy model of whole exported networks: what it fuses, what it cannot run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from srqcli.deploy.build import build_deploy_model, deploy_model_or_reason
from srqcli.deploy.graph import DeployModel
from srqcli.errors import SrqError
from srqcli.export.demo import quantize_untrained, randomize_batchnorm
from srqcli.export.verify import ort_session, run_onnx
from srqcli.export.workflow import onnx_proto
from srqcli.models import build_model


def _resnet20(output_bits: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model("resnet20", 10, 3))
    return quantize_untrained(model, (8, 3, 16, 16), weight_bits=3, act_bits=3, output_bits=output_bits)


@pytest.mark.slow
@pytest.mark.parametrize("output_bits,fused", [(8, 22), (0, 10)])
def test_fused_layers_are_the_integer_kernels_onnxruntime_runs(output_bits, fused, tmp_path):
    """ResNet-20: 21 convs + fc; with output quantizers every layer is an integer kernel, without
    them the 9 residual-branch convs, the 2 shortcuts and the stem stay float. With them nothing
    is inexact (the global average pool is a pairwise sum the file fixes) and onnxruntime's
    logits equal the deploy model's bit for bit."""
    model = _resnet20(output_bits)
    proto, *_ = onnx_proto(model, (2, 3, 16, 16))
    deploy = DeployModel(proto)
    assert len(deploy.plan.fused) == fused
    assert len(deploy.plan.float_layers) == 22 - fused
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    out = run_onnx(ort_session(path, "default"), x.numpy())
    with torch.no_grad():
        want = deploy(x).numpy()
    assert np.abs(out - want).max() <= 1e-3 * np.abs(want).max()
    if output_bits:
        assert deploy.plan.exact
        assert np.array_equal(out, want)


def test_build_deploy_model_keeps_the_model_usable():
    model = _resnet20(8)
    deploy = build_deploy_model(model, (1, 3, 16, 16))
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert deploy(x).shape == model(x).shape == (4, 10)


def test_a_model_that_cannot_be_exported_has_a_reason():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 10))
    deploy, why = deploy_model_or_reason(model, (1, 3, 16, 16))
    assert deploy is None and "no quantized layers" in why


def test_unknown_op_is_a_one_line_error():
    graph = helper.make_graph([helper.make_node("Gelu", ["x"], ["y"], name="act")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    with pytest.raises(SrqError, match="cannot run ONNX op Gelu \\(act\\)"):
        DeployModel(model)


@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (7, 7), (8, 8), (5, 13)])
def test_the_spatial_mean_is_one_fixed_sum_onnxruntime_reproduces(hw, tmp_path):
    """Adaptive average pooling to 1×1 and ``mean((2, 3))`` are written as a pairwise sum in an
    order the file fixes (no GlobalAveragePool/ReduceMean, whose order depends on the CPU):
    onnxruntime and the deploy model give the same bits on awkward sizes, even and odd."""

    class Pool(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 1)
            self.fc = torch.nn.Linear(16, 4)

        def forward(self, x):
            x = self.conv(x)
            pooled = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)
            return self.fc(torch.cat((pooled, x.mean((2, 3))), 1))

    torch.manual_seed(0)
    model = quantize_untrained(Pool(), (8, 3, *hw), weight_bits=4, act_bits=4, output_bits=8)
    proto, *_ = onnx_proto(model, (2, 3, *hw))
    assert not {"GlobalAveragePool", "ReduceMean"} & {n.op_type for n in proto.graph.node}
    deploy = DeployModel(proto)
    assert deploy.plan.exact
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    x = torch.randn(32, 3, *hw, generator=torch.Generator().manual_seed(1)) * 100
    with torch.no_grad():
        want, fake = deploy(x).numpy(), model(x).numpy()
    assert np.array_equal(run_onnx(ort_session(path, "default"), x.numpy()), want)
    assert np.abs(fake - want).max() <= 1e-3 * np.abs(fake).max()  # the trained model's mean, to float rounding
