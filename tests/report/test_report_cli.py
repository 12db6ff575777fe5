"""``srq report`` on real model files, and the report a quantize run writes."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from report_testutil import save_lenet_run
from typer.testing import CliRunner

from srqcli.cli import app
from srqcli.report import read_report

LENET_LAYERS = ["conv1", "conv2", "fc1", "fc2", "fc3"]
REPORT_OPTIONS = {"--out", "--budget", "--chart", "--no-chart"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    save_lenet_run(folder)
    return folder


def invoke(*args):
    return CliRunner().invoke(app, ["report", *map(str, args)], env={"COLUMNS": "100"})


def test_report_on_run_folder(run):
    result = invoke(run)
    assert result.exit_code == 0, result.output
    for name in LENET_LAYERS:
        assert name in result.stdout
    assert "97.25% quantized, 98.50% float" in result.stdout
    assert sorted(p.name for p in run.iterdir()) == ["bits.png", "model.safetensors", "report.json",
                                                    "report.md"]
    report = read_report(run / "report.json")
    assert [r.name for r in report.layers] == LENET_LAYERS
    assert report.model.arch == "lenet5" and report.model.input_shape == [1, 1, 28, 28]
    assert report.source == str(run / "model.safetensors")
    # first/last layer at 8 bits (weights 7: 8-bit inputs), per-channel steps, conv1 MACs: 28·28·6·25
    assert [r.weight_bits for r in report.layers] == [7, 3, 3, 3, 7]
    assert report.layers[0].macs == 28 * 28 * 6 * 25 and report.layers[0].per_channel
    assert len(report.layers[1].weight_steps) == 16
    assert (run / "bits.png").read_bytes()[:4] == b"\x89PNG"


def test_report_on_model_file_with_out_and_budget(run, tmp_path):
    out = tmp_path / "elsewhere"
    result = invoke(run / "model.safetensors", "--out", out, "--budget", "avg_weight_bits=3",
                    "--no-chart")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]
    budget = json.loads((out / "report.json").read_text())["budget"]
    assert budget["kind"] == "avg_weight_bits" and budget["value"] == 3.0 and budget["met"] is False
    # re-running without --budget keeps the recorded budget
    assert invoke(run, "--out", out, "--no-chart").exit_code == 0
    assert read_report(out).budget.value == 3.0


@pytest.mark.parametrize("spelling, kind, value", [
    ("avg-bits=3", "avg_weight_bits", 3.0), ("avg_weight_bits=3", "avg_weight_bits", 3.0),  # search's, report's
    ("size=20KB", "size_mb", 0.02), ("size_mb=0.02", "size_mb", 0.02),
    ("bops=1.2G", "bops", 1.2e9), ("bops=1.2e9", "bops", 1.2e9),
])
def test_report_budget_takes_search_bits_grammar_and_its_own(run, tmp_path, spelling, kind, value):
    """One budget grammar for srq report and srq search-bits, each spelling accepted by both."""
    result = invoke(run, "--out", tmp_path, "--budget", spelling, "--no-chart")
    assert result.exit_code == 0, result.output
    budget = read_report(tmp_path).budget
    assert budget.kind == kind and budget.value == pytest.approx(value)


def test_report_markdown_lists_every_layer(run):
    assert invoke(run, "--no-chart").exit_code == 0
    md = (run / "report.md").read_text()
    for name in LENET_LAYERS:
        assert f"| {name} | " in md


def test_report_on_packed_export_matches_its_checkpoint(tmp_path):
    run = save_lenet_run(tmp_path / "run").parent
    export = CliRunner().invoke(app, ["export", str(run), "--format", "safetensors", "--no-verify"])
    assert export.exit_code == 0, export.output
    packed = run / "model.packed.safetensors"  # what eval and export accept
    assert invoke(run, "--out", tmp_path / "checkpoint", "--no-chart").exit_code == 0
    result = invoke(packed, "--out", tmp_path / "packed", "--no-chart")
    assert result.exit_code == 0, result.output
    checkpoint = read_report(tmp_path / "checkpoint" / "report.json")
    from_packed = read_report(tmp_path / "packed" / "report.json")
    # The packed file holds the weights on their grid, so every weight is a grid point there and
    # the latent weights' statistics (cluster and clipped fractions) are gone; the rest is equal.
    latent = {"cluster_fraction", "clipped_fraction"}
    assert [without(r, latent) for r in from_packed.layers] == [without(r, latent) for r in checkpoint.layers]
    assert without(from_packed.totals, latent) == without(checkpoint.totals, latent)
    assert from_packed.totals.cluster_fraction == 1.0 and from_packed.source == str(packed)


def without(entry, keys: set[str]) -> dict:
    return {k: v for k, v in dataclasses.asdict(entry).items() if k not in keys}


def _bad_targets(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": trunc")
    truncated = tmp_path / "trunc" / "model.safetensors"
    truncated.parent.mkdir()
    save_lenet_run(truncated.parent)
    truncated.write_bytes(truncated.read_bytes()[:-200])
    float_run = tmp_path / "float"
    float_run.mkdir()
    save_lenet_run(float_run, quantized=False)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    plain = tmp_path / "weights.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(plain))
    return {
        "missing": ([tmp_path / "nope"], "not found"),
        "empty folder": ([empty], "not an srq run folder"),
        "corrupt": ([corrupt], "not a valid safetensors file"),
        "truncated": ([truncated], "safetensors"),
        "float model": ([float_run], "is a float model"),
        "onnx": ([onnx], "already an ONNX export"),
        "not srq": ([plain], "not an srq model file"),
        "bad budget": ([float_run, "--budget", "flops=3"], "unknown kind 'flops' (use avg-bits, size or bops"),
        "bad budget value": ([float_run, "--budget", "size_mb=abc"], "'abc' is not a positive number"),
        "no budget kind": ([float_run, "--budget", "3"], "must look like KIND=VALUE"),
    }


def test_bad_input_is_one_line_error(tmp_path):
    for case, (args, message) in _bad_targets(tmp_path).items():
        result = invoke(*args)
        assert result.exit_code == 2, (case, result.output)
        err = result.stderr.strip()
        assert err.startswith("error:") and message in err, (case, err)
        assert "\n" not in err and "Traceback" not in result.output, (case, err)
        named = set(re.findall(r"--[a-z][a-z-]*", err))
        assert named <= REPORT_OPTIONS, (case, err)  # a hint names only options report has


@pytest.mark.slow
def test_quantize_run_writes_the_report(example_run):
    """``example_run`` (tests/conftest.py) is a real ``run_quantize`` of LeNet-5 on the digits."""
    metrics = json.loads((example_run / "metrics.json").read_text())
    report = read_report(example_run / "report.json")
    assert (example_run / "report.md").is_file()
    assert (example_run / "bits.png").read_bytes()[:4] == b"\x89PNG"
    assert report.accuracy.quantized_top1 == pytest.approx(metrics["quantized"]["top1"])
    assert report.accuracy.float_top1 == pytest.approx(metrics["float"]["top1"])
    assert report.totals.packed_bytes == metrics["sizes"]["packed_bytes"]
    assert report.totals.avg_weight_bits == metrics["sizes"]["avg_weight_bits"]
    assert [r.name for r in report.layers] == [p["name"] for p in metrics["plan"]]
    assert all(r.macs and r.macs > 0 for r in report.layers)
    assert report.source == str(example_run / "model.safetensors")
