"""End to end through the real CLI: ``srq quantize`` then ``srq eval`` on real (digits) data."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_digits_idx
from typer.testing import CliRunner

from srqcli.cli import app
from srqcli.config import load_recipe
from srqcli.models import build_model

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


@pytest.mark.usefixtures("eager_srq")
def test_saved_paths_are_absolute_and_a_missing_one_names_the_recipe(tmp_path, monkeypatch):
    """Before: a run kept ``source = "digits"`` and ``checkpoint = "m/state_dict.pt"``, so
    ``srq eval RUN`` from another directory failed, without saying the path came from the run."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    data = write_digits_idx(here / "digits")
    (here / "m").mkdir()
    torch.save(build_model("lenet5", 10, 1).state_dict(), here / "m" / "state_dict.pt")
    elsewhere.mkdir()
    monkeypatch.chdir(here)
    res = runner.invoke(app, ["quantize", "lenet5", "--data", "digits", "-c", "m/state_dict.pt",
                              "--epochs", "1", "--out", "run", "--quiet"])
    assert res.exit_code == 0, res.output
    saved = load_recipe(str(here / "run" / "recipe.toml"))
    assert (saved.data.source, saved.model.checkpoint) == (str(data), str(here / "m" / "state_dict.pt"))

    monkeypatch.chdir(elsewhere)
    ev = runner.invoke(app, ["eval", "../here/run", "--json", "--quiet"])
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["images"] == 60

    data.rename(here / "moved")
    for args, origin in ((["eval", "../here/run"], "../here/run/model.safetensors"),
                         (["quantize", "lenet5", "--recipe", "../here/run/recipe.toml", "--out", "again"],
                          "../here/run/recipe.toml")):
        res = runner.invoke(app, [*args, "--quiet"])
        assert res.exit_code == 2, res.output
        assert res.stderr.strip() == (f"error: data.source {data} from the recipe in {origin} does not "
                                      "exist (moved?); pass --data to use another")
    assert not (elsewhere / "again").exists()


@pytest.mark.slow
def test_quantize_a_weights_file_without_naming_its_architecture(tmp_path):
    """``srq quantize model.pt``: the architecture comes from the file (one line says so), the
    file is the checkpoint; ``--arch`` names it instead; weights given twice, or a file that
    matches nothing, are one-line errors that write nothing."""
    torch.manual_seed(0)
    weights = tmp_path / "model.pt"
    torch.save(build_model("lenet5", 10, 1).state_dict(), weights)
    out = tmp_path / "run"
    res = runner.invoke(app, ["quantize", str(weights), "--data", "example", "--epochs", "0",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"model: {weights} is a state_dict of lenet5 (10 classes, 1 input channels)" in res.output
    assert (out / "model.safetensors").is_file()
    res = runner.invoke(app, ["quantize", str(weights), "--arch", "lenet5", "--data", "example",
                              "--epochs", "0", "--out", str(tmp_path / "named")])
    assert res.exit_code == 0 and "architecture lenet5 (--arch)" in res.output, res.output
    res = runner.invoke(app, ["quantize", str(weights), "-c", str(weights), "--data", "example",
                              "--out", str(tmp_path / "twice")])
    assert res.exit_code == 2 and "pass the weights once" in res.output
    other = tmp_path / "other.pt"
    torch.save({"features.weight": torch.zeros(4, 1, 3, 3), "head.weight": torch.zeros(10, 4)}, other)
    res = runner.invoke(app, ["quantize", str(other), "--data", "example", "--out", str(tmp_path / "no")])
    assert res.exit_code == 2 and "matches no built-in or torchvision classifier" in res.output
    assert not (tmp_path / "twice").exists() and not (tmp_path / "no").exists()


def test_eval_of_a_plain_weights_file(tmp_path):
    """``srq eval model.pt`` evaluates the float model the file holds (it used to say "not a
    valid safetensors file"); ``--arch`` names the architecture instead."""
    torch.manual_seed(0)
    weights = tmp_path / "model.pt"
    torch.save(build_model("lenet5", 10, 1).state_dict(), weights)
    res = runner.invoke(app, ["eval", str(weights), "--data", "example", "--json", "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output[res.output.index("{"):])["images"] == 360
    res = runner.invoke(app, ["eval", str(weights), "--arch", "resnet20", "--data", "example"])
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output, res.output
