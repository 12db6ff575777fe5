"""End to end through the real CLI: ``srq quantize`` then ``srq eval`` on real (digits) data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from srqcli.cli import app
from srqcli.workflow import rundir

runner = CliRunner()


@pytest.mark.slow
def test_quantize_then_eval_through_cli(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["quantize", "example", "--out", str(out), "--epochs", "1",
                              "--pretrain-epochs", "4", "--bits", "3", "--quiet"])
    assert res.exit_code == 0, res.output
    for name in ("model.safetensors", "float.safetensors", "metrics.json", "recipe.toml",
                 "checkpoints/last.pt"):
        assert (out / name).is_file(), name
    assert "top-1 (val)" in res.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert {p["weight_bits"] for p in metrics["plan"]} == {3}
    assert metrics["plan"][0]["act_bits"] == 8  # network input
    assert {p["act_bits"] for p in metrics["plan"][1:]} == {3}
    assert metrics["sizes"]["avg_weight_bits"] == 3.0
    # The float start learned the task (held-out digits) and W3A3 stays close.
    assert metrics["float"]["top1"] > 85.0
    assert metrics["quantized"]["top1"] > metrics["float"]["top1"] - 10.0

    ev = runner.invoke(app, ["eval", str(out), "--json", "--quiet"])
    assert ev.exit_code == 0, ev.output
    evaluated = json.loads(ev.stdout)
    assert evaluated["kind"] == "quantized"
    assert evaluated["images"] == metrics["quantized"]["images"] == 360
    # The saved checkpoint reproduces the accuracy measured at the end of training exactly.
    assert evaluated["top1"] == pytest.approx(metrics["quantized"]["top1"], abs=1e-9)

    fl = runner.invoke(app, ["eval", str(out / "float.safetensors"), "--json", "--quiet"])
    assert fl.exit_code == 0, fl.output
    assert json.loads(fl.stdout)["top1"] == pytest.approx(metrics["float"]["top1"], abs=1e-9)

    # The saved recipe replays: it parses and holds the CLI overrides.
    replay = runner.invoke(app, ["quantize", "example", "--recipe", str(out / "recipe.toml"),
                                 "--out", str(out), "--epochs", "0", "--quiet"])
    assert replay.exit_code == 2 and "not empty" in replay.stderr


def test_version_and_recipes():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.startswith("srq ")
    res = runner.invoke(app, ["recipes"])
    assert res.exit_code == 0 and "example" in res.stdout


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
