"""``srq search-bits`` end to end on the built-in digits data: outputs, budgets, bad input,
resume, and the allocation accepted by ``srq quantize --bit-config``."""

from __future__ import annotations

import json

import pytest
import tomllib
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from srqcli.cli import app
from srqcli.config import load_recipe
from srqcli.models import build_model
from srqcli.report import read_report
from srqcli.search import workflow as wf
from srqcli.search.budget import FILL, BudgetSpec, CostModel
from srqcli.search.workflow import SearchConfig, run_search

torch.set_num_threads(1)
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("eager_srq")


@pytest.fixture(scope="module")
def float_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "lenet5.pt"
    torch.save(build_model("lenet5", 10, 1).state_dict(), path)
    return str(path)


def _recipe(ckpt: str, epochs: int = 1):
    r = load_recipe("example")
    r.model.checkpoint = ckpt
    r.model.pretrain_epochs = 0
    r.data.train_limit, r.data.val_limit, r.data.batch_size = 192, 64, 64
    r.data.calib_batches = 1
    r.train.epochs = epochs
    return r.validate()


def _fails_cleanly(args, out, expect):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], res.stderr
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_search_bits_cli_then_quantize_accepts_the_allocation(tmp_path, float_ckpt):
    out = tmp_path / "search"
    res = runner.invoke(app, ["search-bits", "lenet5", "--data", "example", "-c", float_ckpt,
                              "--min-bits", "2", "--max-bits", "4", "--budget", "avg-bits=3.0",
                              "--act-bits", "4", "--epochs", "1", "--batch-size", "128",
                              "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    for name in ("bits.toml", "search.json", "searched.safetensors", "recipe.toml", "report.json", "report.md",
                 "bits.png", "checkpoints/last.pt"):
        assert (out / name).is_file(), name
    layers = tomllib.loads((out / "bits.toml").read_text())["layers"]
    summary = json.loads((out / "search.json").read_text())
    assert {n: v["weight_bits"] for n, v in layers.items()} == summary["allocation"]
    assert FILL * 3.0 <= summary["achieved"] <= 3.0
    assert summary["history"][0]["budget"] == 3.0 and "expected_cost" in summary["history"][0]
    report = read_report(out / "report.json")
    assert report.budget.kind == "avg_weight_bits" and report.budget.met
    assert FILL * 3.0 <= report.budget.achieved <= 3.0

    q = tmp_path / "ft"  # (a) of the benchmark: fine-tune from the searched weights
    res = runner.invoke(app, ["quantize", "lenet5", "--data", "example", "-c", str(out / "searched.safetensors"),
                              "--bit-config", str(out / "bits.toml"), "--act-bits", "4", "--no-dropbits",
                              "--no-snap-biases", "--epochs", "0", "--batch-size", "128", "--out", str(q),
                              "--quiet"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((q / "metrics.json").read_text())
    assert {p["name"]: p["weight_bits"] for p in metrics["plan"]} == summary["allocation"]
    assert metrics["sizes"]["avg_weight_bits"] == pytest.approx(summary["achieved"])
    # The searched network is the start: its steps and BatchNorm statistics are kept, not
    # re-calibrated (0 epochs and no DropBits, so no BatchNorm re-estimation either, and no
    # bias snap: the fine-tuned model is the searched one, bit for bit).
    searched = load_file(str(out / "searched.safetensors"))
    tuned = load_file(str(q / "model.safetensors"))
    assert any(".weight_quant." in k for k in searched)
    assert searched.keys() == tuned.keys()
    assert [k for k in searched if not torch.equal(searched[k], tuned[k])] == []
    assert metrics["quantized"]["top1"] == pytest.approx(summary["quantized"]["top1"])

    # Other bits than the searched file's: one line saying what to pass.
    res = runner.invoke(app, ["quantize", "lenet5", "--data", "example", "-c", str(out / "searched.safetensors"),
                              "--bits", "4", "--epochs", "0", "--out", str(tmp_path / "bad"), "--quiet"])
    assert res.exit_code == 2 and "is quantized with other bits" in res.output
    assert "--bit-config" in res.output and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("kind", ["size_mb", "bops"])
def test_size_and_bops_budgets_are_met_within_two_percent(tmp_path, float_ckpt, kind):
    recipe = _recipe(float_ckpt)
    # A budget some allocation reaches exactly: the cost of every layer at 3 bits, +0.5%.
    probe_model = build_model("lenet5", 10, 1)
    from srqcli.config import QuantConfig
    from srqcli.nn.surgery import attach_quantizers, plan_bits, quantizable_layers

    qc = QuantConfig(weight_bits=3, act_bits=4)
    attach_quantizers(probe_model, plan_bits([n for n, _ in quantizable_layers(probe_model)], qc), qc)
    probe = CostModel.build(probe_model, BudgetSpec(kind, 1.0), (1, 28, 28), 2, 4)
    value = probe.achieved({l.name: 3 for l in probe.layers}) * 1.005
    text = f"size={value}MB" if kind == "size_mb" else f"bops={value}"
    res = run_search(recipe, SearchConfig(budget=text, act_bits=4), tmp_path / kind,
                     show_progress=False)
    assert res.allocation.in_window
    assert FILL * value <= res.allocation.achieved <= value
    report = read_report(tmp_path / kind / "report.json")
    assert report.budget.kind == kind and report.budget.met
    assert report.budget.achieved >= FILL * value


def test_sensitivity_strategy(tmp_path, float_ckpt):
    res = run_search(_recipe(float_ckpt), SearchConfig(budget="avg-bits=3.0", strategy="sensitivity",
                                                       pins={"conv1": 8}), tmp_path / "s",
                     show_progress=False)
    # conv1 reads the 8-bit network input, so its 8-bit pin trains 7-bit weights (pair bound)
    assert res.allocation.method == "knapsack" and res.allocation.bits["conv1"] == 7
    assert next(lb for lb in res.plan if lb.name == "conv1").weight_bits == 7
    assert FILL * 3.0 <= res.allocation.achieved <= 3.0
    summary = json.loads((tmp_path / "s" / "search.json").read_text())
    assert summary["strategy"] == "sensitivity"
    sens = {h["layer"]: h["sensitivity"] for h in summary["history"]}
    # More bits never hurt more (quantization error falls with bits).
    for layer, s in sens.items():
        assert s["2"] >= s["3"] >= s["4"], layer


def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path, float_ckpt, monkeypatch):
    cfg = SearchConfig(budget="avg-bits=3.0", gate_lr=0.2)
    full = run_search(_recipe(float_ckpt, epochs=2), cfg, tmp_path / "full", show_progress=False)

    real = wf.save_state
    calls = {"n": 0}

    def save_then_crash(*a, **k):
        real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(wf, "save_state", save_then_crash)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        run_search(_recipe(float_ckpt, epochs=2), cfg, part, show_progress=False)
    assert not (part / "bits.toml").exists()
    monkeypatch.setattr(wf, "save_state", real)
    resumed = run_search(_recipe(float_ckpt, epochs=2), cfg, part, resume=True, show_progress=False)
    assert resumed.allocation.bits == full.allocation.bits
    assert resumed.history == full.history  # expected bits, λ, losses: identical


def test_bad_input_one_line_errors(tmp_path, float_ckpt):
    base = ["search-bits", "lenet5", "--data", "example", "-c", float_ckpt, "--epochs", "1", "--quiet"]
    out = tmp_path / "r"
    _fails_cleanly([*base, "--budget", "avg-bits=abc", "--out", str(out)], out, "not a positive number")
    _fails_cleanly([*base, "--budget", "fast=3", "--out", str(out)], out, "unknown kind")
    _fails_cleanly([*base, "--budget", "avg-bits=3", "--pin", "conv9=8", "--out", str(out)], out,
                   "no quantized layer is called 'conv9'")
    _fails_cleanly([*base, "--budget", "avg-bits=1.9", "--out", str(out)], out, "impossible")
    _fails_cleanly([*base, "--budget", "avg-bits=3", "--pin", "fc1=8", "--out", str(out)], out,
                   "impossible")
    _fails_cleanly([*base, "--budget", "avg-bits=3", "--min-bits", "4", "--max-bits", "3",
                    "--out", str(out)], out, "--min-bits")
    _fails_cleanly([*base, "--out", str(out)], out, "--budget is required")


@pytest.mark.parametrize("flag,value,expect", [
    ("--lr", "-1", "train.lr must be in [0, 10], got -1.0"),
    ("--quant-lr", "-1", "train.quant_lr must be in [0, 10], got -1.0"),
    ("--gate-lr", "-0.5", "search.gate_lr must be in [0, 10], got -0.5"),
    ("--lambda-lr", "nan", "search.lambda_lr must be at least 0, got nan"),
    ("--calib-batches", "0", "data.calib_batches must be at least 1, got 0"),
])
def test_numeric_flag_out_of_range(tmp_path, float_ckpt, flag, value, expect):
    out = tmp_path / "r"
    _fails_cleanly(["search-bits", "lenet5", "--data", "example", "-c", float_ckpt, "--epochs", "1",
                    "--budget", "avg-bits=3", "--quiet", "--out", str(out), flag, value], out, expect)


@pytest.mark.parametrize("line,expect", [
    ('gate_lr = "fast"', "recipe key 'search.gate_lr' has the wrong type"),
    ("knapsack_cells = 0", "search.knapsack_cells must be at least 1, got 0"),
    ("sensitivity_batches = -3", "search.sensitivity_batches must be at least 1, got -3"),
    ("penalty = -1.0", "search.penalty must be at least 0, got -1.0"),
    ("bn_reestimate_batches = -1", "search.bn_reestimate_batches must be at least 0, got -1"),
])
def test_recipe_search_numbers_are_range_checked(tmp_path, float_ckpt, line, expect):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[search]\nbudget = "avg-bits=3"\n{line}\n', encoding="utf-8")
    out = tmp_path / "r"
    _fails_cleanly(["search-bits", "lenet5", "--data", "example", "-c", float_ckpt, "--recipe",
                    str(recipe), "--epochs", "1", "--quiet", "--out", str(out)], out, expect)


def test_saved_recipe_replays_the_search(tmp_path, float_ckpt):
    """Before: the saved recipe had no [search] table and the replay failed with
    "--budget is required" (issue 15)."""
    from srqcli.config import to_toml

    start = tmp_path / "start.toml"
    start.write_text(to_toml(_recipe(float_ckpt)), encoding="utf-8")
    first, replay = tmp_path / "first", tmp_path / "replay"
    res = runner.invoke(app, ["search-bits", "lenet5", "--recipe", str(start), "--budget", "avg-bits=3.0",
                              "--pin", "conv1=4", "--gate-lr", "0.05", "--max-bits", "5", "--quiet",
                              "--out", str(first)])
    assert res.exit_code == 0, res.output
    saved = tomllib.loads((first / "recipe.toml").read_text(encoding="utf-8"))["search"]
    assert saved["budget"] == "avg-bits=3.0" and saved["pins"] == {"conv1": 4}
    res = runner.invoke(app, ["search-bits", "lenet5", "--recipe", str(first / "recipe.toml"), "--quiet",
                              "--out", str(replay)])
    assert res.exit_code == 0, res.output
    assert (replay / "recipe.toml").read_text() == (first / "recipe.toml").read_text()
    a, b = (json.loads((d / "search.json").read_text()) for d in (first, replay))
    assert b["search"] == a["search"] and b["search"]["gate_lr"] == 0.05
    assert b["allocation"] == a["allocation"]  # same settings, same seed: the same search


def test_gate_init_budget_starts_the_search_on_the_budget(tmp_path, float_ckpt):
    # Gates and multiplier frozen: the expected cost stays where the search started it.
    cfg = SearchConfig(budget="avg-bits=3.0", gate_init="budget", gate_lr=0.0, lambda_lr=0.0,
                       penalty=0.0)
    res = run_search(_recipe(float_ckpt), cfg, tmp_path / "b", show_progress=False)
    assert res.history[0]["expected_cost"] == pytest.approx(3.0, rel=1e-5)
    assert FILL * 3.0 <= res.allocation.achieved <= 3.0


def test_recipe_search_table_is_read_and_checked(tmp_path, float_ckpt):
    from srqcli.config import resolve_recipe_path

    text = resolve_recipe_path("example").read_text(encoding="utf-8")
    recipe = tmp_path / "r.toml"
    recipe.write_text(text + '\n[search]\ngate_init = "soon"\n', encoding="utf-8")
    out = tmp_path / "r"
    _fails_cleanly(["search-bits", "lenet5", "--data", "example", "-c", float_ckpt, "--recipe",
                    str(recipe), "--budget", "avg-bits=3", "--out", str(out), "--quiet"], out,
                   "gate_init must be in (0, 1) or \"budget\"")
    recipe.write_text(text + '\n[search]\ngate_speed = 1\n', encoding="utf-8")
    _fails_cleanly(["search-bits", "lenet5", "--data", "example", "-c", float_ckpt, "--recipe",
                    str(recipe), "--budget", "avg-bits=3", "--out", str(out), "--quiet"], out,
                   "unknown recipe key 'search.gate_speed'")


@pytest.mark.slow
def test_output_bits_flag_is_kept_by_the_search_and_checked_by_the_fine_tune(tmp_path):
    """``--output-bits 8`` quantizes a ResNet's residual outputs during the search too; the
    searched file records them, and fine-tuning from it needs the same flag."""
    from srqcli.io.quantized import read_model_info

    recipe = tmp_path / "tiny.toml"
    recipe.write_text('version = 1\n[model]\narch = "resnet20"\npretrain_epochs = 1\n'
                      "[data]\nbatch_size = 64\ncalib_batches = 1\ntrain_limit = 256\nval_limit = 64\n"
                      "[train]\nepochs = 1\nfused = false\n")
    out = tmp_path / "search"
    res = runner.invoke(app, ["search-bits", "resnet20", "--recipe", str(recipe), "--data", "example",
                              "--budget", "avg-bits=3.0", "--output-bits", "8", "--out", str(out),
                              "--quiet"])
    assert res.exit_code == 0, res.output
    plan = read_model_info(out / "searched.safetensors").plan
    assert sum(p.output_bits == 8 for p in plan) == 12  # stem, 9 residual branches, 2 shortcuts
    common = ["quantize", "resnet20", "--recipe", str(recipe), "--data", "example",
              "-c", str(out / "searched.safetensors"), "--bit-config", str(out / "bits.toml"),
              "--epochs", "0", "--quiet"]
    res = runner.invoke(app, [*common, "--output-bits", "0", "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "was quantized with --output-bits 8" in res.output
    res = runner.invoke(app, [*common, "--output-bits", "8", "--out", str(tmp_path / "ft")])
    assert res.exit_code == 0, res.output


def test_interrupted_overwrite_keeps_the_previous_search(tmp_path, float_ckpt, monkeypatch):
    out = tmp_path / "search"
    run_search(_recipe(float_ckpt), SearchConfig(budget="avg-bits=3.0"), out, show_progress=False)
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def ctrl_c(*args, **kwargs):  # once the new run has written its recipe.toml
        raise KeyboardInterrupt

    monkeypatch.setattr(wf, "float_start", ctrl_c)
    res = runner.invoke(app, ["search-bits", "lenet5", "--data", "example", "-c", float_ckpt,
                              "--budget", "avg-bits=2.5", "--epochs", "1", "--out", str(out),
                              "--overwrite", "--quiet"])
    assert res.exit_code == 130, res.output
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert "holds its previous run, unchanged" in res.stderr


def test_closing_hint_is_a_command_that_works_as_printed(tmp_path, float_ckpt):
    """The last line of search-bits is the fine-tune command; run as printed (plus --epochs 0,
    the one flag the hint leaves to the user) it fine-tunes the searched network."""
    import shlex

    out = tmp_path / "search"
    res = runner.invoke(app, ["search-bits", "lenet5", "--data", "example", "-c", float_ckpt,
                              "--budget", "avg-bits=3.0", "--act-bits", "3", "--per-channel",
                              "--epochs", "1", "--batch-size", "128", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    command = res.stdout.strip().splitlines()[-1]
    args = shlex.split(command)
    assert args[:3] == ["srq", "quantize", "lenet5"], command
    assert {"-c", "--data", "--bit-config", "--act-bits", "--per-channel", "--out"} <= set(args)
    tuned = runner.invoke(app, [*args[1:], "--epochs", "0", "--quiet"])
    assert tuned.exit_code == 0, tuned.output
    assert (tmp_path / "search-tuned" / "model.safetensors").is_file()
    assert f"fine-tune: {command}" in (out / "bits.toml").read_text()


@pytest.mark.parametrize("spelling", ["avg-bits=3.0", "avg_weight_bits=3.0"])
def test_budget_takes_its_own_grammar_and_the_reports(tmp_path, float_ckpt, spelling):
    """search-bits reads srq report's budget spelling too (one grammar for both commands)."""
    out = tmp_path / "search"
    res = runner.invoke(app, ["search-bits", "lenet5", "--data", "example", "-c", float_ckpt,
                              "--budget", spelling, "--strategy", "sensitivity", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    budget = read_report(out / "report.json").budget
    assert budget.kind == "avg_weight_bits" and budget.value == 3.0
