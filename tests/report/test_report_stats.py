"""Exact per-layer facts: MACs, BOPs, packed bytes, near-grid fraction."""

from __future__ import annotations

import math

import pytest
import torch
from report_testutil import INPUT, KNOWN_MACS, KnownShapes, quantized_known

from srqcli.config import QuantConfig
from srqcli.core.grid import IntGrid
from srqcli.errors import SrqError
from srqcli.nn.surgery import LayerBits, attach_quantizers
from srqcli.report import build_report
from srqcli.report.stats import count_macs, grid_proximity, layer_stats, model_totals


def test_count_macs_matches_formula_on_float_model():
    assert count_macs(KnownShapes(), INPUT) == KNOWN_MACS


def test_count_macs_accepts_batched_shape_and_counts_repeated_calls():
    lin = torch.nn.Linear(4, 4)
    twice = torch.nn.Sequential(lin, lin)  # the same module called twice
    assert count_macs(twice, (1, 1, 1, 4)) == {"0": 2 * 16}


def test_count_macs_bad_input_is_one_line_error():
    with pytest.raises(SrqError) as exc:
        count_macs(KnownShapes(), (3, 5, 5))  # flatten gives 72 ≠ 128 features
    assert "\n" not in str(exc.value) and "[1, 3, 5, 5]" in str(exc.value)
    with pytest.raises(SrqError):
        count_macs(KnownShapes(), (3, 8))


def test_report_macs_and_bops_exact():
    model, plan = quantized_known()
    report = build_report(model, input_shape=INPUT)
    bits = {p.name: p for p in plan}
    assert [r.name for r in report.layers] == list(KNOWN_MACS)
    for r in report.layers:
        assert r.macs == KNOWN_MACS[r.name]
        assert (r.weight_bits, r.act_bits) == (bits[r.name].weight_bits, bits[r.name].act_bits)
        assert r.bops == KNOWN_MACS[r.name] * r.weight_bits * r.act_bits
    by = {r.name: r for r in report.layers}
    assert (by["a"].act_bits, by["g"].weight_bits, by["dw"].weight_bits, by["dw"].act_bits) == (8, 3, 2, 3)
    assert by["dw"].groups == 8 and by["g"].groups == 2 and by["fc1"].groups == 1
    t = report.totals
    assert t.macs == sum(KNOWN_MACS.values())
    assert t.bops == sum(r.bops for r in report.layers)
    assert t.float_bops == t.macs * 32 * 32
    assert t.bops_reduction == pytest.approx(t.float_bops / t.bops)


def test_float_layers_listed_at_32_bits():
    model, _ = quantized_known(QuantConfig(weight_bits=4, act_bits=4, skip=["fc2"]))
    report = build_report(model, input_shape=INPUT)
    fc2 = report.layers[-1]
    assert (fc2.name, fc2.quantized, fc2.weight_bits, fc2.act_bits) == ("fc2", False, 32, 32)
    assert fc2.bops == KNOWN_MACS["fc2"] * 32 * 32 and fc2.packed_bytes == 60 * 4
    assert fc2.weight_steps == [] and fc2.cluster_fraction is None
    assert (report.totals.quantized_layers, report.totals.float_layers) == (4, 1)


def test_no_input_size_means_null_macs():
    model, _ = quantized_known()
    report = build_report(model)
    assert all(r.macs is None and r.bops is None for r in report.layers)
    assert report.totals.macs is None and report.totals.bops is None
    assert report.model.input_shape is None


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_packed_bytes_is_ceil_bits_params_over_8(bits):
    model = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Conv2d(1, 7, 1))  # 15 and 7 weights
    attach_quantizers(model, [LayerBits("0", bits, 4), LayerBits("1", bits, 4)], QuantConfig())
    rows = {s.name: s for s in layer_stats(model)}
    assert rows["0"].packed_bytes == math.ceil(bits * 15 / 8)
    assert rows["1"].packed_bytes == math.ceil(bits * 7 / 8)
    report = build_report(model)
    assert [r.packed_bytes for r in report.layers] == [math.ceil(bits * 15 / 8), math.ceil(bits * 7 / 8)]


def test_totals_agree_with_model_totals():
    model, _ = quantized_known(QuantConfig(weight_bits=3, act_bits=4, per_channel=True))
    t, sizes = build_report(model, input_shape=INPUT).totals, model_totals(model)
    assert (t.float_bytes, t.packed_bytes, t.quantized_params, t.float_params) == (
        sizes["float_bytes"], sizes["packed_bytes"], sizes["quantized_params"], sizes["float_params"])
    assert t.avg_weight_bits == sizes["avg_weight_bits"] and t.compression == sizes["compression"]


def test_avg_weight_bits_is_param_weighted():
    model, _ = quantized_known()
    report = build_report(model)
    q = [r for r in report.layers if r.quantized]
    expected = sum(r.params * r.weight_bits for r in q) / sum(r.params for r in q)
    assert report.totals.avg_weight_bits == pytest.approx(expected)
    assert report.totals.avg_weight_bits != pytest.approx(sum(r.weight_bits for r in q) / len(q))


# u = w/α on the signed 2-bit grid {-2, -1, 0, 1}:
#   inside and near: 0, 0.25 (boundary), -1.75 (0.25 from -2), 1.0 (k_max), -0.8
#   inside, not near: 0.3, 0.5 (tie rounds to even 0: distance 0.5), -1.5
#   outside the clip range: 1.2, -2.6
U = [0.0, 0.25, -1.75, 1.0, -0.8, 0.3, 0.5, -1.5, 1.2, -2.6]
NEAR, INSIDE = 5, 8


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.125])
def test_grid_proximity_exact(alpha):
    w = torch.tensor(U) * alpha
    cluster, clipped = grid_proximity(w, torch.tensor(alpha), IntGrid(2, True))
    assert cluster == NEAR / INSIDE
    assert clipped == 2 / len(U)


def test_grid_proximity_per_channel_and_empty():
    w = torch.tensor([[0.0, 0.3], [0.5, 0.75]])  # row 1 with α=0.5: u = 1.0 (near), 1.5 (not)
    cluster, clipped = grid_proximity(w, torch.tensor([[1.0], [0.5]]), IntGrid(3, True))
    assert (cluster, clipped) == (2 / 4, 0.0)
    cluster, clipped = grid_proximity(torch.tensor([10.0, -10.0]), torch.tensor(1.0), IntGrid(2, True))
    assert (cluster, clipped) == (None, 1.0)


def test_cluster_fraction_through_the_model():
    """α = exp(0) = 1 exactly, so the handcrafted weights are the codes themselves."""
    model = torch.nn.Sequential(torch.nn.Linear(len(U), 1, bias=False))
    attach_quantizers(model, [LayerBits("0", 2, 4)], QuantConfig())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([U]))
        model[0].weight_quant.initialized.fill_(True)
        model[0].input_quant.initialized.fill_(True)
    (row,) = build_report(model, input_shape=(1, 1, len(U))).layers
    assert row.cluster_fraction == NEAR / INSIDE and row.clipped_fraction == 2 / len(U)
    assert build_report(model).totals.cluster_fraction == NEAR / INSIDE


def test_count_macs_on_uncalibrated_quantized_model_leaves_it_unchanged():
    model = KnownShapes().train()
    attach_quantizers(model, [LayerBits(n, 4, 4) for n in KNOWN_MACS], QuantConfig())
    types_before = [type(m) for m in model.modules()]
    assert count_macs(model, INPUT) == KNOWN_MACS  # quantizers never called: no calibration needed
    assert [type(m) for m in model.modules()] == types_before and model.training
    assert not any(m._forward_hooks for m in model.modules())


def test_output_quantizers_are_reported_and_counted():
    """``--output-bits``: a layer's output quantizer is listed with its bits and step, and its
    step is one more float in the packed size."""
    from srqcli.export.demo import quantize_untrained
    from srqcli.models import build_model
    from srqcli.report.render import layer_cells

    torch.manual_seed(0)
    plain = quantize_untrained(build_model("resnet20", 10, 1), (4, 1, 16, 16), weight_bits=3, act_bits=3)
    torch.manual_seed(0)
    model = quantize_untrained(build_model("resnet20", 10, 1), (4, 1, 16, 16), weight_bits=3, act_bits=3,
                               output_bits=8)
    rows = {r.name: r for r in build_report(model).layers}
    assert rows["layer1.0.conv2"].output_bits == 8
    assert rows["layer1.0.conv2"].output_step == float(model.layer1[0].conv2.output_quant.alpha.detach())
    assert rows["layer1.0.conv1"].output_bits is None and rows["fc"].output_step is None
    assert sum(r.output_bits is not None for r in rows.values()) == 12
    assert "output 8" in layer_cells(rows["conv1"])[6]
    assert model_totals(model)["packed_bytes"] == model_totals(plain)["packed_bytes"] + 12 * 4
