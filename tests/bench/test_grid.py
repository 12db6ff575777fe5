"""The benchmark grid harness: cells, variants, suites and the rendered tables (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import grid
from benchmarks.grid import Cell, cells, load_suite, recipe_for
from benchmarks.grid_render import render_part

CONFIGS = Path(grid.__file__).parent / "configs"

ABLATION = """
name = "abl"
data = "example"
models = ["lenet5"]
methods = ["float", "srq", "lsq"]
bits = [2, 3]
seeds = [0, 1]
tables = ["cluster"]

[recipe.train]
epochs = 3

[variants]
"off" = { dropbits = { variant = "none" } }
"lsb" = { methods = ["srq"], dropbits = { variant = "lsb", rate = 0.1 } }
"""


@pytest.fixture
def ablation(tmp_path) -> tuple[Path, dict]:
    path = tmp_path / "abl.toml"
    path.write_text(ABLATION)
    return path, load_suite(path)[0]


def test_every_shipped_config_loads_and_builds_valid_recipes():
    for path in CONFIGS.glob("*.toml"):
        for cfg in load_suite(path):
            for cell in cells(cfg):
                recipe_for(cfg, cell)  # validated: a typo in a config fails here


def test_suites_run_their_parts_and_device_is_part_of_the_config():
    cpu = load_suite(CONFIGS / "cpu_suite.toml")
    assert [c["name"] for c in cpu] == ["cpu_lenet5", "cpu_resnet20"]
    assert {len(cells(c)) for c in cpu} == {(1 + 6 * 3) * 3, 1 + 2 * 2}
    gpu = load_suite(CONFIGS / "cpu_suite.toml", device="cuda")
    assert all(c["recipe"]["train"]["device"] == "cuda" for c in gpu) and gpu != cpu
    fl8 = load_suite(CONFIGS / "gpu_suite.toml")[1]
    assert recipe_for(fl8, cells(fl8)[1]).quant.first_last_bits == 8


def test_variants_apply_to_the_methods_they_name(ablation):
    _, cfg = ablation
    keys = [c.key for c in cells(cfg) if c.seed == 0]
    assert keys == ["lenet5/float/s0",
                    "lenet5/srq~off/w2a2/s0", "lenet5/srq~off/w3a3/s0",
                    "lenet5/srq~lsb/w2a2/s0", "lenet5/srq~lsb/w3a3/s0",
                    "lenet5/lsq~off/w2a2/s0", "lenet5/lsq~off/w3a3/s0"]
    srq_lsb = recipe_for(cfg, Cell("lenet5", "srq", "lsb", 3, 1))
    assert (srq_lsb.dropbits.variant, srq_lsb.dropbits.rate, srq_lsb.train.seed) == ("lsb", 0.1, 1)
    assert srq_lsb.train.epochs == 3 and srq_lsb.quant.weight_bits == srq_lsb.quant.act_bits == 3
    lsq = recipe_for(cfg, Cell("lenet5", "lsq", "off", 2, 0))
    assert (lsq.quant.method, lsq.dropbits.variant) == ("lsq", "none")


def fake_run(cell: Cell) -> dict:
    """A cell's result as run_cell writes it; float is 10 s per epoch, quantized 20 s after a
    slow (compiling) first epoch of 100 s."""
    q = cell.method != "float"
    return {"top1": 90.0 - (cell.bits or 0) + cell.seed, "top5": 99.0,
            "epoch_seconds": [100.0 if q else 10.0, 20.0 if q else 10.0, 20.0 if q else 10.0],
            "val_top1": [80.0, 85.0, 90.0],
            "cluster_fraction": [0.5, 0.6, 0.7] if q else [None] * 3,
            "peak_bytes": 300 if q else 200, "memory": "max RSS"}


def test_render_excludes_the_first_epoch_and_shows_the_cluster_trend(ablation, tmp_path, monkeypatch):
    path, cfg = ablation
    monkeypatch.setattr(grid, "RESULTS", tmp_path)
    assert render_part(cfg, path)[2].startswith("_not run yet_: `python -m benchmarks.grid ")
    runs = {c.key: fake_run(c) for c in cells(cfg) if c.key != "lenet5/lsq~off/w3a3/s1"}
    env = {"machine": "m", "python": "3", "torch": "2", "srq": "0", "git_commit": "abc",
           "threads": 2, "command": "python -m benchmarks.grid abl.toml"}
    (tmp_path / "grid_abl.json").write_text(json.dumps({"env": env, "config": cfg, "runs": runs}))
    text = "\n".join(render_part(cfg, path))
    assert "**Partial: 13 of 14 cells done**" in text
    assert "| float (fine-tuned equally) | 90.50 ± 0.71 | 90.50 ± 0.71 | 1.00× | 1.00× | 1.00× |" in text
    # epochs 2+: 20 s vs 10 s; first epoch 100 s vs 10 s; memory 300 vs 200
    assert "| srq · lsb | 88.50 ± 0.71 | 87.50 ± 0.71 | 2.00× | 10.00× | 1.50× |" in text
    assert "| lsq · off | 88.50 ± 0.71 | 87.00 | 2.00× | 10.00× | 1.50× |" in text
    assert "| srq · off | W3A3 | 50.0 | 60.0 | 70.0 |" in text


GROWN = """
name = "grown"
data = "example"
models = ["lenet5"]
methods = ["float", "srq", "lsq"]
bits = [2, 3]
seeds = [0, 1]

[bits_by_method]
lsq = [2]

[seeds_by_method]
srq = [0, 1]

[recipe.train]
epochs = 3
"""


def test_bits_by_method_and_reuse_of_cells_from_a_grid_with_the_same_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "RESULTS", tmp_path)
    (tmp_path / "g.toml").write_text(GROWN)
    cfg = load_suite(tmp_path / "g.toml")[0]
    assert [c.key for c in cells(cfg) if c.seed == 0] == [
        "lenet5/float/s0", "lenet5/srq/w2a2/s0", "lenet5/srq/w3a3/s0", "lenet5/lsq/w2a2/s0"]
    cfg["seeds"] = [0, 1, 2]
    assert [c.key for c in cells(cfg) if c.seed == 2] == ["lenet5/float/s2", "lenet5/lsq/w2a2/s2"]
    cfg["seeds"] = [0, 1]
    # A smaller grid, same cell settings (one seed, no LSQ), ran before; and one with other epochs.
    small = {**cfg, "name": "small", "methods": ["float", "srq"], "seeds": [0]}
    small.pop("bits_by_method")
    other = {**small, "name": "other", "recipe": {"train": {"epochs": 4}}}
    for c, top1 in ((small, 70.0), (other, 10.0)):
        runs = {cell.key: {**fake_run(cell), "top1": top1} for cell in cells(c)}
        (tmp_path / f"grid_{c['name']}.json").write_text(json.dumps({"config": c, "runs": runs}))
    reused = grid.reusable_runs(cfg)
    assert sorted(reused) == ["lenet5/float/s0", "lenet5/srq/w2a2/s0", "lenet5/srq/w3a3/s0"]
    assert all(r["top1"] == 70.0 and r["reused_from"] == "grid_small.json" for r in reused.values())

    ran = []

    def fake_process(config, cfg_, cell, device):
        ran.append(cell.key)
        return fake_run(cell)

    monkeypatch.setattr(grid, "_run_cell_process", fake_process)
    monkeypatch.setattr(grid, "float_start", lambda *a: None)
    monkeypatch.setattr(grid, "write_result", lambda name, data: (tmp_path / f"{name}.json").write_text(
        json.dumps({"env": {"machine": "m", "python": "3", "torch": "2", "srq": "0", "git_commit": "abc",
                            "threads": 1, "command": "c"}, **data})))
    from rich.console import Console

    grid.run_grid(tmp_path / "g.toml", Console(quiet=True), jobs=2)
    assert sorted(ran) == sorted(c.key for c in cells(cfg) if c.key not in reused)
    saved = json.loads((tmp_path / "grid_grown.json").read_text())["runs"]
    assert len(saved) == len(cells(cfg)) and saved["lenet5/srq/w2a2/s0"]["reused_from"] == "grid_small.json"
    # A rerun finds everything done (its own file first) and runs nothing.
    ran.clear()
    grid.run_grid(tmp_path / "g.toml", Console(quiet=True), jobs=2)
    assert ran == []
    text = "\n".join(render_part(cfg, tmp_path / "g.toml"))
    assert "Reused: 3 cells from `grid_small.json`" in text
    assert "| lsq | 88.50 ± 0.71 | n/a | 2.00× | 10.00× | 1.50× |" in text
