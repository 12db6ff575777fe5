"""``srq quantize`` on a CUDA GPU, then ``export`` and ``eval`` (skipped without a GPU).

Training on CUDA runs under bfloat16 autocast with channels-last batches; the checkpoint it
saves must still export to an ONNX file that onnxruntime (on the CPU) verifies against the
PyTorch model, and evaluate to the accuracy measured at the end of training.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from srqcli.cli import app

pytestmark = [pytest.mark.cuda, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

runner = CliRunner()


def test_quantize_on_cuda_then_export_and_eval(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["quantize", "example", "--out", str(out), "--epochs", "2",
                              "--pretrain-epochs", "4", "--bits", "3", "--device", "cuda", "--quiet"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["float"]["top1"] > 85.0
    assert metrics["quantized"]["top1"] > metrics["float"]["top1"] - 10.0

    ev = runner.invoke(app, ["eval", str(out), "--json", "--quiet"])
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["top1"] == pytest.approx(metrics["quantized"]["top1"], abs=1e-9)

    onnx_path = tmp_path / "m.onnx"
    ex = runner.invoke(app, ["export", str(out), "--out", str(onnx_path), "--data", "example",
                             "--json"])
    assert ex.exit_code == 0, ex.output
    verify = json.loads(ex.output[ex.output.index("{"):])["verify"]
    assert verify["ok"] is True
    ev = runner.invoke(app, ["eval", str(onnx_path), "--json", "--quiet"])
    assert ev.exit_code == 0, ev.output
    assert abs(json.loads(ev.stdout)["top1"] - metrics["quantized"]["top1"]) <= 1.0
