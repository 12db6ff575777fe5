"""Choosing DropBits' default: variants × rates on Fashion-MNIST LeNet-5, several seeds.

From one float LeNet-5 (trained once and cached), every configuration fine-tunes the same epochs
with the same schedule, all layers quantized, annealed rate + BatchNorm re-estimation; top-1 on
the held-out t10k split. Results (mean ± std over seeds) go to
``benchmarks/results/dropbits_ablation.json``; interrupted runs continue where they stopped.

    python -m benchmarks.dropbits_ablation --bits 2 3 --variants none top lsb mask --rates 0.05 \
        --seeds 0 1 --epochs 2 --train-limit 20000
"""

from __future__ import annotations

import argparse
import json
import statistics

from rich.console import Console

from benchmarks.common import RESULTS, write_result
from srqcli.config import Recipe, recipe_from_dict
from srqcli.io.quantized import ModelInfo, save_model
from srqcli.train.progress import Reporter
from srqcli.workflow.quantize import (
    Job,
    build_float_model,
    run_quantize,
    seed_everything,
)

DATA = "/usr/share/datasets/fashion-mnist"
CACHE = RESULTS / "cache"


def recipe(args, **quant) -> Recipe:
    return recipe_from_dict({
        "model": {"arch": "lenet5"},
        "data": {"source": args.data, "batch_size": 128, "train_limit": args.train_limit},
        "quant": quant,
        "dropbits": {"anneal_epochs": 1, "bn_reestimate_batches": 50},
        "train": {"epochs": args.epochs, "lr": 2e-4, "quant_lr": 1e-3},
    })


def float_start(args, console):
    path = CACHE / f"lenet5_fmnist_float_{args.pretrain_epochs}ep.safetensors"
    if not path.is_file():
        r = recipe(args)
        r.data.train_limit = None  # the float start sees the whole training split
        seed_everything(0)
        with Reporter(console) as rep:
            job = Job(r, CACHE, console, rep)
            model = build_float_model(r, job.data, None)
            job.fit(model, args.pretrain_epochs, 2e-3, "float pretrain")
            save_model(path, model, ModelInfo("lenet5", 10, 1, job.data.image_size, r,
                                              mean=job.data.mean, std=job.data.std))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DATA)
    p.add_argument("--pretrain-epochs", type=int, default=8)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--bits", type=int, nargs="+", default=[2, 3])
    p.add_argument("--variants", nargs="+", default=["none", "top", "lsb", "mask"])
    p.add_argument("--rates", type=float, nargs="+", default=[0.05])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--train-limit", type=int, default=None, help="fine-tune on a fixed subset")
    args = p.parse_args()
    console = Console(stderr=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    ckpt = float_start(args, console)
    out_file = RESULTS / "dropbits_ablation.json"
    runs = json.loads(out_file.read_text()).get("runs", {}) if out_file.is_file() else {}
    for bits in args.bits:
        for variant in args.variants:
            for rate in ([0.0] if variant == "none" else args.rates):
                for seed in args.seeds:
                    key = f"w{bits}a{bits}/{variant}/p{rate}/s{seed}/e{args.epochs}"
                    if key in runs:
                        continue
                    r = recipe(args, weight_bits=bits, act_bits=bits)
                    r.model.checkpoint = str(ckpt)
                    r.dropbits.variant, r.dropbits.rate, r.train.seed = variant, rate or 0.05, seed
                    res = run_quantize(r, CACHE / "ablation", overwrite=True, console=console,
                                       show_progress=False)
                    runs[key] = {"top1": res.quant_metrics.top1, "float_top1": res.float_metrics.top1}
                    console.print(f"{key}: {res.quant_metrics.top1:.2f}%")
                    write_result("dropbits_ablation", {"settings": vars(args), "runs": runs})
    summary = {}
    for key, v in runs.items():
        group = key.rsplit("/s", 1)[0].replace("/e", " e")
        summary.setdefault(group, []).append(v["top1"])
    for g, vals in sorted(summary.items()):
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        print(f"{g:32s} {statistics.mean(vals):6.2f} ± {sd:.2f}  (n={len(vals)})")


if __name__ == "__main__":
    main()
