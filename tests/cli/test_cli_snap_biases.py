"""``srq quantize`` trains with deploy numerics: it snaps the biases, so it reports the
accuracy of the file it ships as its own, and keeps the accuracy before the snap."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from srqcli.cli import app
from srqcli.config import load_recipe
from srqcli.errors import SrqError

runner = CliRunner()


@pytest.mark.slow
def test_quantize_reports_fake_quant_equal_to_deployed(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["quantize", "example", "--out", str(out), "--epochs", "1",
                              "--pretrain-epochs", "2", "--quiet"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["quantized"]["top1"] == metrics["deployed"]["top1"]
    assert metrics["quantized"]["loss"] == pytest.approx(metrics["deployed"]["loss"], rel=1e-5)
    before = metrics["before_bias_snap"]
    assert before["images"] == metrics["quantized"]["images"] and 0 <= before["top1"] <= 100
    assert before["snap"]["layers"] > 0 and 0 < before["snap"]["max_delta_output_steps"] < 0.5
    assert load_recipe(str(out / "recipe.toml")).quant.snap_biases is True


def test_the_flag_is_offered_and_the_recipe_key_type_checked(tmp_path):
    res = runner.invoke(app, ["quantize", "--help"])
    assert res.exit_code == 0 and "--no-snap-biases" in res.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[quant]\nsnap_biases = "yes"\n')
    with pytest.raises(SrqError, match="snap_biases"):
        load_recipe(str(bad))
