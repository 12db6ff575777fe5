"""``srq quantize --output-bits 8`` then ``srq export`` and ``srq eval``, through the real CLI:
a ResNet whose residual branches, shortcuts and stem are quantized in training exports with
every conv as an integer kernel, exactly (verified), and evaluates alike in every form."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from srqcli.cli import app

runner = CliRunner()

pytestmark = pytest.mark.usefixtures("eager_srq")


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


@pytest.mark.slow
def test_output_bits_run_exports_every_conv_as_an_integer_kernel(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('version = 1\n[model]\narch = "resnet20"\npretrain_epochs = 2\n'
                      "[data]\nbatch_size = 64\ncalib_batches = 2\n"
                      "[train]\nepochs = 1\nfused = false\n")
    run = tmp_path / "run"
    res = runner.invoke(app, ["quantize", "resnet20", "--recipe", str(recipe), "--data", "example",
                              "--bits", "4", "--output-bits", "8", "--out", str(run)])
    assert res.exit_code == 0, res.output
    assert "output quantizers (8 bits) on 12 layers whose output no quantizer reads: conv1, " in res.output
    plan = json.loads((run / "metrics.json").read_text())["plan"]
    assert sum(p["output_bits"] == 8 for p in plan) == 12  # stem, 9 residual branches, 2 shortcuts

    onnx_path = tmp_path / "m.onnx"
    exported = _json(runner.invoke(app, ["export", str(run), "--out", str(onnx_path), "--data", "example",
                                         "--batches", "2", "--json"]))
    assert exported["verify"]["ok"] is True  # exact: verified at 1 output step, no --requant
    ops = exported["verify"]["executed_op_types"]
    assert ops.get("QLinearConv") == 21 and "Conv" not in ops and "FusedConv" not in ops, ops

    packed = tmp_path / "m.safetensors"
    assert runner.invoke(app, ["export", str(run), "--format", "safetensors", "--out", str(packed)]).exit_code == 0
    ck = _json(runner.invoke(app, ["eval", str(run), "-q", "--json"]))
    ox = _json(runner.invoke(app, ["eval", str(onnx_path), "-q", "--json"]))
    st = _json(runner.invoke(app, ["eval", str(packed), "-q", "--json"]))
    assert ck["images"] == ox["images"] == st["images"] > 0
    assert st["top1"] == ck["top1"]  # the packed file rebuilds the same network
    # the reported deployed accuracy is the exported file's, to the image
    assert ox["top1"] == ck["deployed"]["top1"] and ox["loss"] == pytest.approx(ck["deployed"]["loss"])

    # Continuing from the quantized file keeps its output quantizers: the flag must agree.
    res = runner.invoke(app, ["quantize", "resnet20", "--recipe", str(recipe), "--data", "example",
                              "-c", str(run / "model.safetensors"), "--bits", "4", "--epochs", "0",
                              "--output-bits", "0", "--out", str(tmp_path / "bad"), "--quiet"])
    assert res.exit_code == 2 and "was quantized with --output-bits 8" in res.output
    assert not (tmp_path / "bad").exists()
    res = runner.invoke(app, ["quantize", "resnet20", "--recipe", str(recipe), "--data", "example",
                              "-c", str(run / "model.safetensors"), "--bits", "4", "--output-bits", "8",
                              "--epochs", "0", "--out", str(tmp_path / "again"), "--quiet"])
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["plan"] == plan
