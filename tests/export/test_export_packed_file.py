"""Packed safetensors: true-width codes, exact round trip, size, damaged files."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors import safe_open

from srqcli.errors import SrqError
from srqcli.export.demo import write_quantized_file
from srqcli.export.packed import load_packed, save_packed
from srqcli.nn.graph import trace
from srqcli.nn.surgery import quant_layers

# eager SRQ math (bit-identical to the compiled kernels) on one thread: see tests/conftest.py
pytestmark = pytest.mark.usefixtures("eager_srq")


def _packed(tmp_path, **kw):
    model, info = write_quantized_file(tmp_path / "q.safetensors", **kw)
    shape = (2, info.in_channels, info.image_size, info.image_size)
    path = tmp_path / "p.safetensors"
    sizes = save_packed(path, model, info, trace(model, shape).bn_folds)
    return model, info, path, sizes


CASES = {
    "lenet-w4a4-per-tensor": dict(arch="lenet5"),
    "lenet-mixed-2..8-bits": dict(arch="lenet5", per_channel=True, weight_bits=3, act_bits=3,
                                  layers={"conv1": {"weight_bits": 2}, "conv2": {"weight_bits": 5},
                                          "fc1": {"weight_bits": 6}, "fc2": {"weight_bits": 7},
                                          "fc3": {"weight_bits": 8, "act_bits": 7}}),
    "resnet20-w2a2-per-channel": dict(arch="resnet20", in_channels=3, image_size=16, weight_bits=2,
                                      act_bits=2, per_channel=True),
    "resnet20-w3a3-output-8-bits": dict(arch="resnet20", in_channels=3, image_size=16, weight_bits=3,
                                        act_bits=3, output_bits=8),
}


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_is_exact(case, tmp_path):
    model, info, path, _ = _packed(tmp_path, **CASES[case])
    rebuilt, info2 = load_packed(path)
    assert info2.plan == info.plan and info2.arch == info.arch
    x = torch.randn(64, info.in_channels, info.image_size, info.image_size,
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
    for (name, a), (_, b) in zip(quant_layers(model), quant_layers(rebuilt)):
        assert torch.equal(a.weight_quant.alpha, b.weight_quant.alpha), name
        assert torch.equal(a.input_quant.alpha, b.input_quant.alpha), name
        if hasattr(a, "output_quant"):
            assert torch.equal(a.output_quant.alpha, b.output_quant.alpha), name
            assert bool(a.output_quant.signed_flag) == bool(b.output_quant.signed_flag), name
        assert hasattr(a, "output_quant") == hasattr(b, "output_quant"), name
        with torch.no_grad():
            assert torch.equal(a.weight_quant(a.weight), b.weight_quant(b.weight)), name


def test_metadata_and_size(tmp_path):
    model, info, path, sizes = _packed(tmp_path, **CASES["lenet-mixed-2..8-bits"])
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        names = list(f.keys())
    layers, records = json.loads(meta["layers"]), json.loads(meta["encodings"])
    assert meta["format"] == "srq.packed" and meta["packed_format_version"] == "2"
    assert {k: v["weight"]["bits"] for k, v in records.items()} == {"conv1": 2, "conv2": 5, "fc1": 6, "fc2": 7, "fc3": 8}
    assert records["conv1"]["weight"]["signed"] is True and records["conv1"]["weight"]["axis"] == 0
    assert torch.equal(torch.tensor(records["conv1"]["weight"]["step"]),
                       model.conv1.weight_quant.alpha.detach().flatten())
    assert layers["conv1"]["bn"] == "bn1" and "conv1.deploy.scale" in names
    assert records["fc3"]["input"]["bits"] == 7 and "recipe" in meta and "srq_version" in meta
    assert not any(n.endswith(("log_sigma", "log_alpha", "num_batches_tracked", ".step")) for n in names)
    ideal = sum(records[k]["weight"]["bits"] * torch.Size(v["shape"]).numel() for k, v in layers.items()) / 8
    assert sizes["packed_weight_bytes"] <= ideal + len(layers)  # ≤ 1 padding byte per layer
    header = struct.unpack("<Q", path.read_bytes()[:8])[0]
    payload = path.stat().st_size - 8 - header
    assert payload <= 1.02 * (ideal + sizes["other_bytes"])
    float_params = sum(p.numel() for p in model.parameters()) * 4
    assert path.stat().st_size < float_params / 4  # LeNet: mostly fc1 at 6 bits


def test_damaged_files(tmp_path):
    _, _, path, _ = _packed(tmp_path, arch="lenet5")
    data = path.read_bytes()
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(SrqError, match="not a valid safetensors file"):
        load_packed(truncated)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(SrqError):
        load_packed(garbage)
    with pytest.raises(SrqError, match="not an srq packed file"):
        load_packed(tmp_path / "q.safetensors")  # a quantized checkpoint, not packed
    with pytest.raises(SrqError, match="not found"):
        load_packed(tmp_path / "missing.safetensors")


def test_tampered_metadata_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    _, _, path, _ = _packed(tmp_path, arch="lenet5")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(path))
    records = json.loads(meta["encodings"])
    records["fc1"]["weight"]["bits"] = 3
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={**meta, "encodings": json.dumps(records)})
    with pytest.raises(SrqError, match="damaged"):
        load_packed(bad)
    del records["fc1"]
    save_file(tensors, str(bad), metadata={**meta, "encodings": json.dumps(records)})
    with pytest.raises(SrqError, match="damaged"):
        load_packed(bad)
    save_file(tensors, str(bad), metadata={**meta, "packed_format_version": "3"})
    with pytest.raises(SrqError, match="newer srq"):
        load_packed(bad)
    del tensors["fc2.weight.packed"]
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(SrqError, match="damaged"):
        load_packed(bad)


def _as_version_1(path, out) -> None:
    """Rewrite a packed file as srq wrote format 1: steps as tensors, bits in ``layers``."""
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    tensors, layers = load_file(str(path)), json.loads(meta["layers"])
    for name, records in json.loads(meta.pop("encodings")).items():
        spec = layers[name]
        spec.update(bits=records["weight"]["bits"], signed=True, act_bits=records["input"]["bits"],
                    act_signed=records["input"]["signed"])
        for role, rec in records.items():
            tensors[f"{name}.{role}.step"] = torch.tensor(rec["step"], dtype=torch.float32)
        if "output" in records:
            spec.update(output_bits=records["output"]["bits"], output_signed=records["output"]["signed"])
    save_file(tensors, str(out), metadata={**meta, "packed_format_version": "1", "layers": json.dumps(layers)})


@pytest.mark.parametrize("case", ["lenet-mixed-2..8-bits", "resnet20-w3a3-output-8-bits"])
def test_format_1_files_still_load(case, tmp_path):
    model, info, path, _ = _packed(tmp_path, **CASES[case])
    old = tmp_path / "v1.safetensors"
    _as_version_1(path, old)
    rebuilt, _ = load_packed(old)
    x = torch.randn(8, info.in_channels, info.image_size, info.image_size,
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
