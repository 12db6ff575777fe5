"""Learned per-layer bits vs uniform bits vs sensitivity, on Fashion-MNIST ResNet-20.

For each weight budget (average bits; activations fixed) and seed, four arms, every one
trained for the same total number of epochs ``T = search_epochs + finetune_epochs`` from the
same float checkpoint (the one ``benchmarks/fmnist_accuracy.py`` trains and caches):

(a) ``learned``: ``srq search-bits`` (gates, ``search_epochs``), then fixed-bit fine-tuning of the
    searched weights with the read-out allocation (``finetune_epochs``).
(b) ``uniform``: every layer at the largest uniform bit-width within the budget, ``T`` epochs.
(c) ``learned-from-float``: the allocation of (a), fixed bits, trained from the float start for
    ``T`` epochs (the paper's hypothesis is that (a) beats (c): the search's weights help).
(d) ``sensitivity``: Fisher-weighted quantization error + exact knapsack under the same budget,
    then ``T`` epochs of fixed-bit fine-tuning.

Top-1 on the held-out t10k split. Results are cached per arm in
``benchmarks/results/search_bits.json`` so an interrupted run continues.

    python -m benchmarks.search_bits --budgets 3.0 2.5 --seeds 0 1 2

Search variants, each in its own results file: ``--gate-structure lsb`` (resolution-level gates
instead of range rings, docs/search-bits.md; ``search_bits_lsb.json``) and ``--gate-init budget``
(gates start where the expected cost is the budget instead of at ``P(on) = 0.9``;
``search_bits_init-budget.json``). ``--arms learned`` runs only (a) and (c), the arms that
depend on the search (``uniform`` and ``sensitivity`` do not).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from rich.console import Console

from benchmarks.common import RESULTS, write_result
from benchmarks.fmnist_accuracy import CACHE, DATA
from srqcli.config import Recipe, recipe_from_dict
from srqcli.search.allocation import ALLOCATION_TOML, read_allocation
from srqcli.search.workflow import SEARCHED, SearchConfig, run_search
from srqcli.workflow.quantize import run_quantize

RUNS = CACHE / "search_bits"
#: Families of arms: ``learned`` is (a) and (c), which share the search.
ARMS = ("learned", "uniform", "sensitivity")


def recipe(args, seed: int, epochs: int, checkpoint: Path) -> Recipe:
    return recipe_from_dict({
        "model": {"arch": "resnet20", "checkpoint": str(checkpoint)},
        "data": {"source": args.data, "batch_size": 128, "calib_batches": 4,
                 "train_limit": args.train_limit},
        "quant": {"weight_bits": args.max_bits, "act_bits": args.act_bits},
        "dropbits": {"variant": "none"},
        "train": {"epochs": epochs, "lr": args.lr, "quant_lr": args.quant_lr, "seed": seed,
                  "optimizer": "adam", "schedule": "cosine"},
    })


def fine_tune(args, seed: int, epochs: int, start: Path, out: Path,
              layers: dict | None, uniform_bits: int | None,
              console: Console) -> dict:
    r = recipe(args, seed, epochs, start)
    if layers is not None:
        r.quant.layers = {k: dict(v) for k, v in layers.items()}
    if uniform_bits is not None:
        r.quant.weight_bits = uniform_bits
    res = run_quantize(r, out, overwrite=True, console=console)
    return {"top1": res.quant_metrics.top1, "avg_weight_bits": res.sizes.get("avg_weight_bits"),
            "epoch_seconds": [h.seconds for h in res.history]}


def search(args, seed: int, budget: float, strategy: str, float_ckpt: Path, out: Path,
           console: Console) -> dict:
    r = recipe(args, seed, args.search_epochs, float_ckpt)
    cfg = SearchConfig(budget=f"avg-bits={budget}", min_bits=args.min_bits, max_bits=args.max_bits,
                       act_bits=args.act_bits, strategy=strategy, structure=args.gate_structure,
                       gate_init=args.gate_init if args.gate_init == "budget" else float(args.gate_init))
    res = run_search(r, cfg, out, overwrite=True, console=console)
    return {"achieved": res.allocation.achieved, "bits": res.allocation.bits,
            "search_top1": res.search_metrics.top1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DATA)
    p.add_argument("--float-checkpoint", type=Path, default=CACHE / "resnet20_fmnist_float_2ep.safetensors",
                   help="float ResNet-20 (python -m benchmarks.fmnist_accuracy trains and caches it)")
    p.add_argument("--budgets", type=float, nargs="+", default=[3.0, 2.5])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--min-bits", type=int, default=2)
    p.add_argument("--max-bits", type=int, default=4)
    p.add_argument("--act-bits", type=int, default=4)
    p.add_argument("--search-epochs", type=int, default=2)
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--quant-lr", type=float, default=1e-3)
    p.add_argument("--train-limit", type=int, default=10000)
    p.add_argument("--gate-structure", choices=("top", "lsb"), default="top",
                   help="level structure of the search's gates (its own results file)")
    p.add_argument("--gate-init", default="0.9",
                   help="initial P(on) of the gates, or 'budget' (its own results file)")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                   help="learned: (a) and (c); uniform: (b); sensitivity: (d)")
    p.add_argument("--name", help="results file name (default: search_bits plus the variant)")
    p.add_argument("--restart", action="store_true",
                   help="replace a results file whose settings differ (refused otherwise)")
    args = p.parse_args()
    if not args.float_checkpoint.is_file():
        raise SystemExit(f"{args.float_checkpoint} not found: run python -m benchmarks.fmnist_accuracy first")
    console = Console(stderr=True)
    # The arms run change no result, and a search variant names its file: neither is a setting.
    variant = {"gate_structure": args.gate_structure, "gate_init": args.gate_init}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("arms", "name", "restart") and k not in variant}
    suffix = "".join(f"_{v}" for v in ([args.gate_structure] if args.gate_structure != "top" else [])
                     + ([f"init-{args.gate_init}"] if args.gate_init != "0.9" else []))
    name = args.name or "search_bits" + suffix
    result_file = RESULTS / f"{name}.json"
    done = json.loads(result_file.read_text()) if result_file.is_file() else {}
    if done and done.get("settings") != settings and not args.restart:
        raise SystemExit(f"{result_file} holds runs with other settings: choose another --name, "
                         "or --restart to replace them")
    runs = done.get("runs", {}) if done.get("settings") == settings else {}
    total = args.search_epochs + args.finetune_epochs

    def record(key: str, fn, *fn_args) -> dict:
        if key not in runs:
            runs[key] = fn(*fn_args)
            write_result(name, {"settings": settings, "variant": variant, "runs": runs})
            if "top1" in runs[key]:
                console.print(f"[bold]{key}[/]: top-1 {runs[key]['top1']:.2f}%")
        return runs[key]

    for seed in args.seeds:
        for budget in args.budgets:
            tag, base = f"b{budget:g}/s{seed}", RUNS / f"b{budget:g}_s{seed}"
            if name != "search_bits":
                base = base / name
            ckpt = args.float_checkpoint
            if "learned" in args.arms:
                learned = record(f"{tag}/search-learned", search, args, seed, budget, "learned",
                                 ckpt, base / "search-learned", console)
                layers = read_allocation(base / "search-learned" / ALLOCATION_TOML)
                record(f"{tag}/learned", fine_tune, args, seed, args.finetune_epochs,
                       base / "search-learned" / SEARCHED, base / "learned", layers, None, console)
                record(f"{tag}/learned-from-float", fine_tune, args, seed, total, ckpt,
                       base / "learned-from-float", layers, None, console)
                console.print(f"{tag}: learned allocation {learned['bits']}")
            if "uniform" in args.arms:
                record(f"{tag}/uniform", fine_tune, args, seed, total, ckpt, base / "uniform", None,
                       math.floor(budget), console)
            if "sensitivity" in args.arms:
                record(f"{tag}/search-sensitivity", search, args, seed, budget, "sensitivity", ckpt,
                       base / "search-sensitivity", console)
                record(f"{tag}/sensitivity", fine_tune, args, seed, total, ckpt, base / "sensitivity",
                       read_allocation(base / "search-sensitivity" / ALLOCATION_TOML), None, console)


if __name__ == "__main__":
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    main()
