"""File sizes of the exported artifacts for ResNet-20 at 4 bits (issue acceptance numbers)."""

from __future__ import annotations

import copy
import struct

import pytest
import torch

from srqcli.export.bench import float_onnx
from srqcli.export.demo import (
    quantize_untrained,
    randomize_batchnorm,
    write_quantized_file,
)
from srqcli.export.workflow import export_onnx, export_safetensors
from srqcli.models import build_model

# eager SRQ math (bit-identical to the compiled kernels) on one thread: see tests/conftest.py
pytestmark = pytest.mark.usefixtures("eager_srq")


def test_packed_onnx_is_under_016_of_float(tmp_path):
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model("resnet20", 10, 3))
    shape = (1, 3, 16, 16)
    fsize = float_onnx(copy.deepcopy(model), shape, tmp_path / "float.onnx").stat().st_size
    quantize_untrained(model, (8, 3, 16, 16), weight_bits=4, act_bits=4, per_channel=True)
    res = export_onnx(model, None, tmp_path / "p.onnx", shape=shape, layout="packed", verify=False)
    assert res.bytes <= 0.16 * fsize, (res.bytes, fsize)
    qdq = export_onnx(model, None, tmp_path / "q.onnx", shape=shape, verify=False)
    assert qdq.bytes <= 0.30 * fsize  # int8 containers: ~1/4 of float plus scales


@pytest.mark.parametrize("bits", [2, 3, 5])
def test_packed_safetensors_size(tmp_path, bits):
    model, info = write_quantized_file(tmp_path / "q.safetensors", "resnet20", in_channels=3,
                                       image_size=16, weight_bits=bits, act_bits=bits)
    res = export_safetensors(model, info, tmp_path / "p.safetensors", verify=False)
    params = sum(m.weight.numel() for n, m in model.named_modules() if hasattr(m, "weight_quant"))
    ideal = bits * params / 8 + res.details["other_bytes"]
    header = struct.unpack("<Q", res.path.read_bytes()[:8])[0]
    assert res.bytes - 8 - header <= 1.02 * ideal
    assert res.details["packed_weight_bytes"] <= bits * params / 8 + 22  # ≤ 1 pad byte per layer
