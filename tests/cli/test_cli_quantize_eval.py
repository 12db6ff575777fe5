"""End to end through the real CLI: ``srq quantize`` then ``srq eval`` on real (digits) data."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from srqcli.cli import app

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
