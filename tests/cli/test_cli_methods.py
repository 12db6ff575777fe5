"""``srq quantize --method`` end to end through the CLI on the built-in digits example."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from srqcli.cli import app
from srqcli.config import load_recipe

runner = CliRunner()
QUICK = ["--epochs", "1", "--pretrain-epochs", "4", "--bits", "3", "--quiet"]


def quantize(out, method: str):
    res = runner.invoke(app, ["quantize", "example", "--method", method, "--out", str(out), *QUICK])
    assert res.exit_code == 0, res.output
    header = next(line for line in res.stdout.splitlines() if "float" in line and "┃" in line)
    assert header.split("┃")[-3].strip() == method  # the summary names what ran
    assert header.split("┃")[-2].strip() == "deployed"  # beside the exported file's accuracy
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_lsq_quantizes_evaluates_and_exports(tmp_path):
    out = tmp_path / "lsq"
    metrics = quantize(out, "lsq")
    recipe = load_recipe(str(out / "recipe.toml"))
    assert recipe.quant.method == "lsq" and recipe.dropbits.variant == "none"
    assert metrics["quantized"]["top1"] > metrics["float"]["top1"] - 10.0
    ev = runner.invoke(app, ["eval", str(out), "--json", "--quiet"])
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["top1"] == pytest.approx(metrics["quantized"]["top1"], abs=1e-9)
    packed = tmp_path / "lsq.packed.safetensors"
    ex = runner.invoke(app, ["export", str(out), "--format", "safetensors", "--out", str(packed)])
    assert ex.exit_code == 0, ex.output
    ev = runner.invoke(app, ["eval", str(packed), "--json", "--quiet"])
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["top1"] == pytest.approx(metrics["quantized"]["top1"], abs=1e-9)


@pytest.mark.slow
def test_dq_trains_and_export_refuses_it(tmp_path):
    out = tmp_path / "dq"
    metrics = quantize(out, "dq")
    assert metrics["quantized"]["top1"] > metrics["float"]["top1"] - 10.0
    assert metrics["deployed"] is None and "non-uniform levels" in metrics["undeployable"]
    ex = runner.invoke(app, ["export", str(out), "--format", "safetensors"])
    errors = [line for line in ex.stderr.splitlines() if line.startswith("error:")]
    assert ex.exit_code == 2 and len(errors) == 1 and "non-uniform levels" in errors[0]


def test_no_dropbits_contradiction_is_a_user_error(tmp_path):
    res = runner.invoke(app, ["quantize", "example", "--no-dropbits", "--dropbits", "lsb",
                              "--out", str(tmp_path / "x"), "--quiet"])
    assert res.exit_code == 2 and "contradicts" in res.stderr
