"""``srq quantize --epochs 0`` (post-training quantization) through the real CLI, and the
warning at start of a run whose outputs may not fit on its file system."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

from typer.testing import CliRunner

from srqcli.cli import app
from srqcli.workflow import rundir

runner = CliRunner()


def post_training(start: Path, out: Path, *extra: str):
    """``srq quantize --epochs 0`` (post-training quantization) from a float LeNet-5."""
    return runner.invoke(app, ["quantize", "lenet5", "--data", "example", "-c", str(start), "--bits", "4",
                               "--epochs", "0", "--out", str(out), *extra])


def test_epochs_0_is_post_training_quantization(example_run, tmp_path, eager_srq):
    """README's post-training mode: calibrate the steps, no fine-tuning, evaluate, save."""
    out = tmp_path / "ptq"
    res = post_training(example_run / rundir.FLOAT, out, "--quiet")
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / rundir.MODEL).with_name(rundir.METRICS).read_text())
    assert metrics["history"] == []  # no training step
    assert metrics["sizes"]["avg_weight_bits"] == 4.0
    assert metrics["quantized"]["top1"] > metrics["float"]["top1"] - 10.0  # W4A4 PTQ of a trained LeNet-5
    assert runner.invoke(app, ["eval", str(out), "--quiet"]).exit_code == 0


def test_short_of_disk_space_warns_once_at_start(example_run, tmp_path, eager_srq, monkeypatch):
    """A file system with less free space than the run's outputs may need: one warning line
    before any work, and the run goes on (the estimate is an upper bound)."""
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(**{**real(path)._asdict(), "free": 1000}))
    out = tmp_path / "ptq"
    res = post_training(example_run / rundir.FLOAT, out)
    assert res.exit_code == 0, res.output
    lines = res.stderr.strip().splitlines()
    warnings = [i for i, line in enumerate(lines) if "warning:" in line]
    assert len(warnings) == 1, res.stderr
    assert f"{out} has 1.0 KiB free and this run may write about " in lines[warnings[0]]
    first_result = next(i for i, line in enumerate(lines) if "float model: top-1" in line)
    assert warnings[0] < first_result, res.stderr  # at the start, before any evaluation
    assert (out / rundir.MODEL).is_file()
