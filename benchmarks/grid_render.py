"""Markdown tables of a grid's results (``benchmarks/results/grid_NAME.json``).

Per model: top-1 mean ± std over seeds per method (and ablation variant) and bit-width, and
fine-tune time per epoch and peak memory as ratios to the float model fine-tuned equally.
The first epoch of every cell is left out of the time ratio: it includes the one-off
``torch.compile`` of the SRQ kernels (and the allocator's warm-up), which is not a per-epoch
cost; its ratio is shown on its own. With ``tables = ["cluster"]`` a second table follows the
cluster-promotion metric epoch by epoch.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.grid import Cell, cells, recipe_for, result_path

REPO = Path(__file__).parent.parent


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def env_line(env: dict[str, Any]) -> str:
    return (f"{env['machine']}; Python {env['python']}, torch {env['torch']}, srq {env['srq']} "
            f"(commit {env['git_commit'] or '?'}), {env['threads']} threads"
            + (f", GPU {env['cuda']}" if env.get("cuda") else "")
            + (f". {env['note']}" if env.get("note") else ""))  # e.g. code not yet committed


def command_for(config: Path) -> str:
    path = config.resolve()
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    return f"python -m benchmarks.grid {shown}"


def _ratio(values: list[float], base: float | None) -> str:
    return f"{statistics.mean(values) / base:.2f}×" if values and base else "—"


def _setup_line(cfg: dict[str, Any]) -> str:
    """What every cell of the table did: the layers quantized, the schedule, the data."""
    r = recipe_for(cfg, Cell(cfg["models"][0], "float", None, None, 0))
    t, q = r.train, r.quant
    layers = ("first and last layers at 8 bits, the rest at WbAb" if q.first_last_bits == 8
              else "all layers quantized (first and last included; network input 8 bits)")
    subset = f" on a fixed {r.data.train_limit}-image subset" if r.data.train_limit else ""
    return (f"{layers.capitalize()}. Float start: {cfg.get('pretrain_epochs', 4)} epochs on the full "
            f"training split (cached); every cell then fine-tunes {t.epochs} epoch{'s' if t.epochs != 1 else ''}{subset} "
            f"(batch {r.data.batch_size}, {t.optimizer}, {t.schedule}, lr {t.lr}, quantizer lr "
            f"{t.quant_lr}) on {t.device if t.device != 'auto' else 'the default device'}. "
            f"Top-1 on the held-out split, mean ± std over seeds {', '.join(map(str, cfg['seeds']))}.")


def render_part(cfg: dict[str, Any], config: Path, level: int = 3) -> list[str]:
    """The section of one grid (a heading of ``level``): its tables, or "not run yet" with the
    command that runs it."""
    title = (f"{'#' * level} Grid `{cfg['name']}`: {', '.join(cfg['models'])} × {', '.join(cfg['methods'])}"
             + (f" × {len(cfg['variants'])} variants" if cfg.get("variants") else "")
             + f" × W/A {', '.join(map(str, cfg['bits']))} × seeds {', '.join(map(str, cfg['seeds']))}")
    path = result_path(cfg)
    if not path.is_file():
        return [title, "", f"_not run yet_: `{command_for(config)}`", ""]
    result = json.loads(path.read_text())
    cfg, runs, env = result["config"], result["runs"], result["env"]
    total = len(cells(cfg))
    lines = [title, "", _setup_line(cfg), "", f"Command: `{env['command']}`", "",
             f"Machine: {env_line(env)}", ""]
    if len(runs) < total:
        lines += [f"**Partial: {len(runs)} of {total} cells done** (rerun the command to continue).", ""]
    reused: dict[str, int] = {}
    for run in runs.values():
        if "reused_from" in run:
            reused[run["reused_from"]] = reused.get(run["reused_from"], 0) + 1
    if reused:
        lines += ["Reused: " + "; ".join(f"{n} cells from `{f}` (same settings, run by that grid)"
                                        for f, n in reused.items())
                  + ". Their times were measured in that run.", ""]
    for model in cfg["models"]:
        lines += [f"{'#' * (level + 1)} {model}", ""] + _accuracy_table(cfg, runs, model)
        if "cluster" in cfg.get("tables", []):
            lines += _cluster_table(cfg, runs, model)
    return lines


def _groups(cfg: dict[str, Any], runs: dict[str, Any], model: str) -> dict[str, list[dict[str, Any]]]:
    """Results by group (the cell key without the seed), in the grid's order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for cell in cells(cfg):
        if cell.model == model:
            out.setdefault(cell.group, [])
            if cell.key in runs:
                out[cell.group].append(runs[cell.key])
    return out


def _rows(cfg: dict[str, Any], model: str) -> list[tuple[str, dict[int | None, str]]]:
    """Table rows: (label, bits → group) per method and variant, in the grid's order."""
    rows: dict[str, dict[int | None, str]] = {}
    for cell in cells(cfg):
        if cell.model == model and cell.seed == cfg["seeds"][0]:
            label = cell.method + (f" · {cell.variant}" if cell.variant else "")
            rows.setdefault(label, {})[cell.bits] = cell.group
    return list(rows.items())


def _steady(r: dict[str, Any]) -> list[float]:
    """Epoch times after the first (none for a one-epoch run: its ratio shows as "—")."""
    return r["epoch_seconds"][1:]


def _accuracy_table(cfg: dict[str, Any], runs: dict[str, Any], model: str) -> list[str]:
    groups = _groups(cfg, runs, model)
    base = groups.get(f"{model}/float", [])
    base_steady = [t for r in base for t in _steady(r)]
    base_t = statistics.mean(base_steady) if base_steady else None
    base_first = statistics.mean(r["epoch_seconds"][0] for r in base) if base else None
    base_m = statistics.mean(r["peak_bytes"] for r in base) if base else None
    memory = next((r["memory"] for g in groups.values() for r in g), "peak")
    header = ["method", *(f"W{b}A{b} top-1 (%)" for b in cfg["bits"]),
              "time/epoch ÷ float (epochs 2+)", "first epoch ÷ float", f"peak memory ({memory}) ÷ float"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for label, by_bits in _rows(cfg, model):
        if None in by_bits:  # float: one accuracy, the reference of every column
            acc = mean_sd([r["top1"] for r in base]) if base else "—"
            lines.append(f"| float (fine-tuned equally) | {' | '.join([acc] * len(cfg['bits']))} "
                         f"| 1.00× | 1.00× | 1.00× |")
            continue
        done = [r for b in cfg["bits"] for r in groups.get(by_bits.get(b), [])]
        accs = [("—" if not groups[by_bits[b]] else mean_sd([r["top1"] for r in groups[by_bits[b]]]))
                if b in by_bits else "n/a" for b in cfg["bits"]]
        lines.append(f"| {label} | {' | '.join(accs)} "
                     f"| {_ratio([t for r in done for t in _steady(r)], base_t)} "
                     f"| {_ratio([r['epoch_seconds'][0] for r in done], base_first)} "
                     f"| {_ratio([r['peak_bytes'] for r in done], base_m)} |")
    return lines + [""]


def _cluster_table(cfg: dict[str, Any], runs: dict[str, Any], model: str) -> list[str]:
    """Cluster fraction after each epoch, mean over seeds (50% = weights spread uniformly)."""
    groups = _groups(cfg, runs, model)
    epochs = recipe_for(cfg, Cell(model, "float", None, None, 0)).train.epochs
    lines = [(f"Cluster promotion, {model}: % of latent weights (inside the clip range) within "
              "α/4 of a grid point after each epoch, mean over seeds; 50% is what weights spread "
              "uniformly between grid points give."), "",
             "| method | bits | " + " | ".join(f"ep {e + 1}" for e in range(epochs)) + " |",
             "|---|---:|" + "---:|" * epochs]
    for label, by_bits in _rows(cfg, model):
        for bits, group in by_bits.items():
            if bits is None or not groups[group]:
                continue
            per_epoch = [[r["cluster_fraction"][e] for r in groups[group]
                          if e < len(r.get("cluster_fraction", [])) and r["cluster_fraction"][e] is not None]
                         for e in range(epochs)]
            cols = [f"{100 * statistics.mean(v):.1f}" if v else "—" for v in per_epoch]
            lines.append(f"| {label} | W{bits}A{bits} | {' | '.join(cols)} |")
    return lines + [""]
