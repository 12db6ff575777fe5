"""Run a grid of quantize jobs (model × method × bits × seed) from a TOML config.

Each model is trained once in float (cached), then every cell fine-tunes from that start for
the same epochs: ``float`` (the reference, fine-tuned equally) or a ``srq quantize --method``
at WbAb. Each cell runs in its own process, so its peak memory (max RSS on CPU, peak
allocated on CUDA) is its own; its result is added to ``benchmarks/results/grid_NAME.json``
at once, and a rerun skips the cells already there (change the config's settings and the
grid starts over). ``--render`` prints the tables: top-1 mean ± std over seeds, fine-tune time
per epoch and peak memory as ratios to float.

    python -m benchmarks.grid benchmarks/configs/cpu_suite.toml
    python -m benchmarks.grid benchmarks/configs/cpu_suite.toml --render

Config keys: ``name``, ``data``, ``models``, ``methods`` (``float`` and any of srq, rq, lsq,
ste, slb, dq), ``bits``, ``seeds``, ``pretrain_epochs``, ``pretrain_lr`` and ``[recipe]`` (a
recipe table applied to every cell: epochs, learning rates, data limits, DropBits…).
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from benchmarks.common import RESULTS, write_result
from srqcli.config import Recipe, recipe_from_dict
from srqcli.io.checkpoint import read_state_dict
from srqcli.io.quantized import save_model
from srqcli.train.loop import evaluate
from srqcli.train.progress import Reporter
from srqcli.workflow.quantize import Job, build_float_model, run_quantize, seed_everything

CACHE = RESULTS / "cache" / "grid"


def load_config(path: Path) -> dict[str, Any]:
    cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    cfg.setdefault("recipe", {})
    for key in ("name", "data", "models", "methods", "bits", "seeds"):
        if key not in cfg:
            raise SystemExit(f"{path}: missing key {key!r}")
    return cfg


def cells(cfg: dict[str, Any]) -> list[str]:
    """Cell keys in run order: seeds outermost, so a partial grid has every method's seed 0."""
    keys = []
    for seed in cfg["seeds"]:
        for model in cfg["models"]:
            for method in cfg["methods"]:
                for bits in ([None] if method == "float" else cfg["bits"]):
                    keys.append(f"{model}/{method}" + (f"/w{bits}a{bits}" if bits else "") + f"/s{seed}")
    return keys


def recipe_for(cfg: dict[str, Any], model: str, method: str, bits: int | None, seed: int) -> Recipe:
    data = copy.deepcopy(cfg["recipe"])
    data.setdefault("model", {})["arch"] = model
    data.setdefault("data", {})["source"] = cfg["data"]
    data.setdefault("train", {})["seed"] = seed
    quant = data.setdefault("quant", {})
    if bits is not None:
        quant["weight_bits"] = quant["act_bits"] = bits
    if method not in ("float", "srq"):
        quant["method"] = method
        data.setdefault("dropbits", {})["variant"] = "none"  # DropBits is SRQ's
    return recipe_from_dict(data)


def float_start(cfg: dict[str, Any], model: str, console: Console) -> Path:
    """Train the float model once per config and model (cached)."""
    path = CACHE / f"{cfg['name']}_{model}_float_{cfg.get('pretrain_epochs', 4)}ep.safetensors"
    if path.is_file():
        return path
    r = recipe_for(cfg, model, "float", None, 0)
    r.data.train_limit = None
    seed_everything(0)
    with Reporter(console) as rep:
        job = Job(r, CACHE, console, rep)
        net = build_float_model(r, job.data, None)
        job.fit(net, cfg.get("pretrain_epochs", 4), cfg.get("pretrain_lr", 2e-3), "float pretrain")
        save_model(path, net, job.info([]))
    return path


def run_cell(cfg: dict[str, Any], key: str, console: Console) -> dict[str, Any]:
    """Fine-tune one cell in this process and measure it."""
    parts = key.split("/")
    model, method, seed = parts[0], parts[1], int(parts[-1][1:])
    bits = int(parts[2][1:].split("a")[0]) if len(parts) == 4 else None
    r = recipe_for(cfg, model, method, bits, seed)
    r.model.checkpoint = str(float_start(cfg, model, console))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    if method == "float":
        seed_everything(seed)
        with Reporter(console) as rep:
            job = Job(r, CACHE, console, rep)
            net = build_float_model(r, job.data, read_state_dict(r.model.checkpoint)).to(job.device)
            history = job.fit(net, r.train.epochs, r.train.lr, "float ft")
            m = evaluate(net, job.val_loader, job.device)
        top1, top5 = m.top1, m.top5
    else:
        res = run_quantize(r, CACHE / key.replace("/", "_"), overwrite=True, console=console,
                           show_progress=False)
        top1, top5, history = res.quant_metrics.top1, res.quant_metrics.top5, res.history
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"top1": top1, "top5": top5, "epoch_seconds": [h.seconds for h in history],
            "peak_bytes": peak, "memory": "cuda allocated" if torch.cuda.is_available() else "max RSS"}


def run_grid(config: Path, console: Console) -> Path:
    cfg = load_config(config)
    name = f"grid_{cfg['name']}"
    result_file = RESULTS / f"{name}.json"
    done = json.loads(result_file.read_text()) if result_file.is_file() else {}
    runs = done.get("runs", {}) if done.get("config") == cfg else {}
    CACHE.mkdir(parents=True, exist_ok=True)
    for model in cfg["models"]:
        float_start(cfg, model, console)  # once, before the cells fan out
    for key in cells(cfg):
        if key in runs:
            continue
        proc = subprocess.run([sys.executable, "-m", "benchmarks.grid", str(config), "--cell", key],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"cell {key} failed:\n{proc.stderr[-3000:]}")
        runs[key] = json.loads(proc.stdout.strip().splitlines()[-1])
        console.print(f"[bold]{key}[/]: top-1 {runs[key]['top1']:.2f}%")
        write_result(name, {"config": cfg, "runs": runs})
    return result_file


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def render(result: dict[str, Any]) -> list[str]:
    """Markdown: one accuracy table per model, plus time/epoch and peak memory vs float."""
    cfg, runs = result["config"], result["runs"]
    env = result["env"]
    lines = [f"### Grid `{cfg['name']}`: {', '.join(cfg['models'])} × {', '.join(cfg['methods'])}"
             f" × W/A {', '.join(map(str, cfg['bits']))} × seeds {', '.join(map(str, cfg['seeds']))}", "",
             f"Command: `{env['command']}`", "",
             f"Machine: {env['machine']}; Python {env['python']}, torch {env['torch']}, "
             f"srq {env['srq']} (commit {env['git_commit'] or '?'})", ""]
    for model in cfg["models"]:
        def group(method: str, bits: int | None) -> list[dict[str, Any]]:
            prefix = f"{model}/{method}" + (f"/w{bits}a{bits}" if bits else "") + "/s"
            return [v for k, v in runs.items() if k.startswith(prefix)]

        base = group("float", None)
        base_t = statistics.mean(t for r in base for t in r["epoch_seconds"]) if base else None
        base_m = statistics.mean(r["peak_bytes"] for r in base) if base else None
        header = ["method", *(f"W{b}A{b} top-1 (%)" for b in cfg["bits"]), "time/epoch ÷ float",
                  "peak memory ÷ float"]
        lines += [f"#### {model}", "", "| " + " | ".join(header) + " |",
                  "|---|" + "---:|" * (len(header) - 1)]
        for method in cfg["methods"]:
            if method == "float":
                acc = _mean_sd([r["top1"] for r in base]) if base else "—"
                lines.append(f"| float (fine-tuned equally) | {' | '.join([acc] * len(cfg['bits']))} | 1.00× | 1.00× |")
                continue
            accs, times, mems = [], [], []
            for b in cfg["bits"]:
                g = group(method, b)
                accs.append(_mean_sd([r["top1"] for r in g]) if g else "—")
                times += [t for r in g for t in r["epoch_seconds"]]
                mems += [r["peak_bytes"] for r in g]
            t = f"{statistics.mean(times) / base_t:.2f}×" if times and base_t else "—"
            m = f"{statistics.mean(mems) / base_m:.2f}×" if mems and base_m else "—"
            lines.append(f"| {method} | {' | '.join(accs)} | {t} | {m} |")
        lines.append("")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path)
    p.add_argument("--cell", help="run one cell in this process and print its JSON (internal)")
    p.add_argument("--render", action="store_true", help="print the tables of the results")
    args = p.parse_args()
    console = Console(stderr=True)
    if args.cell:
        print(json.dumps(run_cell(load_config(args.config), args.cell, console)))
    elif args.render:
        cfg = load_config(args.config)
        print("\n".join(render(json.loads((RESULTS / f"grid_{cfg['name']}.json").read_text()))))
    else:
        run_grid(args.config, console)


if __name__ == "__main__":
    main()
