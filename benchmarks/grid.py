"""Run a grid of quantize jobs (model × method × variant × bits × seed) from a TOML config.

Each model is trained once in float (cached), then every cell fine-tunes from that start for
the same epochs: ``float`` (the reference, fine-tuned equally) or a ``srq quantize --method``
at WbAb. Each cell runs in its own process, so its peak memory (max RSS on CPU, peak
allocated on CUDA) is its own; its result is added to ``benchmarks/results/grid_NAME.json``
at once, and a rerun skips the cells already there (change the config's settings and the
grid starts over). ``--render`` prints the tables (:mod:`benchmarks.grid_render`).

    python -m benchmarks.grid benchmarks/configs/cpu_suite.toml
    python -m benchmarks.grid benchmarks/configs/gpu_suite.toml --device cuda
    python -m benchmarks.grid benchmarks/configs/cpu_suite.toml --render

Config keys: ``name``, ``data``, ``models``, ``methods`` (``float`` and any of srq, rq, lsq,
ste, slb, dq), ``bits``, ``seeds``, ``pretrain_epochs``, ``pretrain_lr``, ``[recipe]`` (a
recipe table applied to every cell: epochs, learning rates, data limits, DropBits…),
``[variants]`` (optional, ablations: label → recipe overrides applied on top of ``[recipe]``;
an override table may name the ``methods`` it applies to, by default all but float),
``[bits_by_method]`` / ``[seeds_by_method]`` (optional: method → its own bit-widths / seeds
instead of ``bits`` / ``seeds``; a slow baseline can run fewer seeds) and
``tables`` (optional: ``"cluster"`` adds the per-epoch cluster-promotion table).

A cell's result depends only on its recipe and float start, so a cell already run by another
grid with the same settings (everything but the lists of methods, bits and seeds) is reused
from that grid's results file and marked so (``reused_from``); growing a grid (more seeds,
another method) keeps the cells it has. ``--jobs N`` runs N cells at a time (each its own
process; give each one thread with ``OMP_NUM_THREADS``).

A suite is a config with only ``parts = ["a.toml", "b.toml"]`` (paths relative to it): one
command runs every part in order, each with its own results file.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib
import torch
from rich.console import Console

from benchmarks.common import RESULTS, write_result
from srqcli.config import Recipe, recipe_from_dict
from srqcli.io.checkpoint import read_state_dict
from srqcli.io.quantized import save_model
from srqcli.train.loop import EpochRecord, evaluate
from srqcli.train.progress import Reporter
from srqcli.workflow.quantize import (
    Job,
    build_float_model,
    run_quantize,
    seed_everything,
)

CACHE = RESULTS / "cache" / "grid"
REQUIRED = ("name", "data", "models", "methods", "bits", "seeds")
#: Config keys that choose which cells a grid has, not what a cell computes.
SELECTION = ("name", "methods", "bits", "bits_by_method", "seeds", "seeds_by_method", "tables")


@dataclass(frozen=True)
class Cell:
    """One fine-tuning run of the grid."""

    model: str
    method: str
    variant: str | None  # a label of [variants]; None for float and grids without variants
    bits: int | None  # None for float
    seed: int

    @property
    def key(self) -> str:
        name = self.method + (f"~{self.variant}" if self.variant else "")
        return f"{self.model}/{name}" + (f"/w{self.bits}a{self.bits}" if self.bits else "") + f"/s{self.seed}"

    @property
    def group(self) -> str:
        """The key without the seed: the cells averaged in one table entry."""
        return self.key.rsplit("/s", 1)[0]


def load_suite(path: Path, device: str | None = None) -> list[dict[str, Any]]:
    """The grid configs of ``path``: its parts for a suite, else the config itself.

    ``device`` (``--device``) sets ``recipe.train.device`` of every part; it is part of the
    config, so results from another device are never mixed in.
    """
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    if "parts" in raw:
        return [cfg for part in raw["parts"] for cfg in load_suite(path.parent / part, device)]
    raw.setdefault("recipe", {})
    for key in REQUIRED:
        if key not in raw:
            raise SystemExit(f"{path}: missing key {key!r}")
    if device:
        raw["recipe"].setdefault("train", {})["device"] = device
    return [raw]


def cells(cfg: dict[str, Any]) -> list[Cell]:
    """Cells in run order: seeds outermost, so a partial grid has every method's seed 0."""
    variants = cfg.get("variants", {})
    out = []
    for seed in cfg["seeds"]:
        for model in cfg["models"]:
            for method in cfg["methods"]:
                if seed not in cfg.get("seeds_by_method", {}).get(method, cfg["seeds"]):
                    continue
                if method == "float":
                    out.append(Cell(model, method, None, None, seed))
                    continue
                labels = [v for v, over in variants.items() if method in over.get("methods", [method])]
                bits = cfg.get("bits_by_method", {}).get(method, cfg["bits"])
                for variant in labels or [None]:
                    out += [Cell(model, method, variant, b, seed) for b in bits]
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def recipe_for(cfg: dict[str, Any], cell: Cell) -> Recipe:
    data = copy.deepcopy(cfg["recipe"])
    if cell.variant:
        _merge(data, {k: v for k, v in cfg["variants"][cell.variant].items() if k != "methods"})
    data.setdefault("model", {})["arch"] = cell.model
    data.setdefault("data", {})["source"] = cfg["data"]
    data.setdefault("train", {})["seed"] = cell.seed
    quant = data.setdefault("quant", {})
    # The published protocols quantize layer inputs only: keep that unless a config asks for
    # output quantizers (srq quantize's default since the deploy model, 8 bits).
    quant.setdefault("output_bits", 0)
    # ... and report the trained model's own accuracy: no snap of its biases onto the int32 grid
    # of an exported file (srq quantize's default since the bias snap).
    quant.setdefault("snap_biases", False)
    if cell.bits is not None:
        quant["weight_bits"] = quant["act_bits"] = cell.bits
    if cell.method not in ("float", "srq"):
        quant["method"] = cell.method
        data.setdefault("dropbits", {})["variant"] = "none"  # DropBits is SRQ's
    return recipe_from_dict(data)


def float_start(cfg: dict[str, Any], model: str, console: Console) -> Path:
    """Train the float model once (cached), on the full training split.

    The cache is named by what the float training depends on, so the suites and ablations
    with the same data, model, schedule and device share one start (and its minutes).
    """
    r = recipe_for(cfg, Cell(model, "float", None, None, 0))
    r.data.train_limit = None
    epochs, lr = cfg.get("pretrain_epochs", 4), cfg.get("pretrain_lr", 2e-3)
    path = CACHE / (f"{Path(cfg['data']).name}_{model}_float_{epochs}ep_lr{lr}_b{r.data.batch_size}"
                    f"_{r.train.optimizer}_{r.train.device}.safetensors")
    if path.is_file():
        return path
    seed_everything(0)
    with Reporter(console) as rep:
        job = Job(r, CACHE, console, rep)
        net = build_float_model(r, job.data, None).to(job.device)
        job.fit(net, epochs, lr, "float pretrain")
        save_model(path, net, job.info([]))
    return path


def _cell_dir(cfg: dict[str, Any], cell: Cell) -> Path:
    """The cell's scratch run folder (per grid: grids share cell keys, not settings)."""
    return CACHE / cfg["name"] / re.sub(r"[^\w.~-]+", "_", cell.key)


def run_cell(cfg: dict[str, Any], cell: Cell, console: Console) -> dict[str, Any]:
    """Fine-tune one cell in this process and measure it."""
    r = recipe_for(cfg, cell)
    r.model.checkpoint = str(float_start(cfg, cell.model, console))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    history: list[EpochRecord]
    if cell.method == "float":
        seed_everything(cell.seed)
        with Reporter(console) as rep:
            job = Job(r, CACHE, console, rep)
            net = build_float_model(r, job.data, read_state_dict(r.model.checkpoint)).to(job.device)
            history = job.fit(net, r.train.epochs, r.train.lr, "float ft")
            m = evaluate(net, job.val_loader, job.device, amp=job.amp)
        top1, top5 = m.top1, m.top5
    else:
        res = run_quantize(r, _cell_dir(cfg, cell), overwrite=True, console=console, show_progress=False)
        top1, top5, history = res.quant_metrics.top1, res.quant_metrics.top5, res.history
    cuda = torch.cuda.is_available() and r.train.device != "cpu"
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"top1": top1, "top5": top5, "epoch_seconds": [h.seconds for h in history],
            "val_top1": [h.val_top1 for h in history],
            "cluster_fraction": [h.cluster_fraction for h in history],
            "peak_bytes": peak, "memory": "cuda allocated" if cuda else "max RSS"}


def result_path(cfg: dict[str, Any]) -> Path:
    return RESULTS / f"grid_{cfg['name']}.json"


def cell_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """What a cell's result depends on, besides its key: the config without the cell selection."""
    return {k: v for k, v in cfg.items() if k not in SELECTION}


def reusable_runs(cfg: dict[str, Any]) -> dict[str, Any]:
    """Results of this grid's cells already in a results file with the same cell settings: its
    own first, then other grids' (marked ``reused_from``)."""
    own, found = result_path(cfg), {}
    wanted = {c.key for c in cells(cfg)}
    for path in [own, *sorted(p for p in RESULTS.glob("grid_*.json") if p != own)]:
        if not path.is_file():
            continue
        done = json.loads(path.read_text())
        if cell_settings(done.get("config", {})) != cell_settings(cfg):
            continue
        for key, run in done.get("runs", {}).items():
            if key in wanted and key not in found:
                found[key] = run if path == own or "reused_from" in run else {**run, "reused_from": path.name}
    return found


def _run_cell_process(config: Path, cfg: dict[str, Any], cell: Cell, device: str | None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.grid", str(config), "--part", cfg["name"],
           "--cell", cell.key, *(["--device", device] if device else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"cell {cell.key} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_grid(config: Path, console: Console, device: str | None = None, jobs: int = 1) -> list[Path]:
    """Run every part of ``config``, skipping the cells already done (here or in a grid with
    the same cell settings); ``jobs`` cells at a time."""
    written = []
    for cfg in load_suite(config, device):
        result_file = result_path(cfg)
        runs = reusable_runs(cfg)
        CACHE.mkdir(parents=True, exist_ok=True)
        for model in cfg["models"]:
            float_start(cfg, model, console)  # once, before the cells fan out
        todo = [cell for cell in cells(cfg) if cell.key not in runs]
        if runs:
            write_result(result_file.stem, {"config": cfg, "runs": runs})
        pool = ThreadPoolExecutor(max_workers=max(jobs, 1))
        futures = {pool.submit(_run_cell_process, config, cfg, cell, device): cell for cell in todo}
        try:
            for future in as_completed(futures):  # each result is saved as soon as it is in
                cell = futures[future]
                runs[cell.key] = future.result()
                console.print(f"[bold]{cfg['name']} {cell.key}[/]: top-1 {runs[cell.key]['top1']:.2f}%")
                write_result(result_file.stem, {"config": cfg, "runs": runs})
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # a failed cell stops the grid
        written.append(result_file)
    return written


def main() -> None:
    from benchmarks.grid_render import render_part

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path)
    p.add_argument("--device", choices=("cpu", "cuda"), help="train every cell on this device")
    p.add_argument("--part", help="the part of a suite --cell belongs to (internal)")
    p.add_argument("--cell", help="run one cell in this process and print its JSON (internal)")
    p.add_argument("--render", action="store_true", help="print the tables of the results")
    p.add_argument("--jobs", type=int, default=1, help="cells run at a time (default 1)")
    args = p.parse_args()
    console = Console(stderr=True)
    parts = load_suite(args.config, args.device)
    if args.cell:
        cfg = next(c for c in parts if c["name"] == (args.part or parts[0]["name"]))
        cell = next(c for c in cells(cfg) if c.key == args.cell)
        print(json.dumps(run_cell(cfg, cell, console)))
    elif args.render:
        for cfg in parts:
            print("\n".join(render_part(cfg, args.config)))
    else:
        run_grid(args.config, console, args.device, args.jobs)


if __name__ == "__main__":
    main()
