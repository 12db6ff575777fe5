"""Accuracy on real data: Fashion-MNIST ResNet-20, SRQ (± DropBits) vs float fine-tuned equally.

1. Trains (or reuses) a float ResNet-20 on the Fashion-MNIST training split.
2. From that one checkpoint, fine-tunes for the same epochs with the same schedule:
   the float model (the reference), SRQ + DropBits and SRQ without DropBits at each bit-width,
   all layers quantized (first and last included, network input 8 bits).
3. Reports top-1 on the held-out t10k split. Results are cached per configuration in
   ``benchmarks/results/fmnist_accuracy_e{EPOCHS}.json`` (one file, one table, per fine-tuning
   length) so an interrupted run continues.

Layer inputs are quantized, outputs not (``--output-bits 0``, the protocol of the published
tables; ``srq quantize`` defaults to 8 since the deploy model: ``benchmarks.deploy_accuracy``).

Needs Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).

    python -m benchmarks.fmnist_accuracy --pretrain-epochs 6 --epochs 4 --bits 4 3 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from rich.console import Console

from benchmarks.common import RESULTS, write_result
from srqcli.config import Recipe, recipe_from_dict
from srqcli.io.checkpoint import read_state_dict
from srqcli.io.quantized import ModelInfo, save_model
from srqcli.train.loop import evaluate
from srqcli.train.progress import Reporter
from srqcli.workflow.quantize import (
    Job,
    build_float_model,
    run_quantize,
    seed_everything,
)

DATA = "/usr/share/datasets/fashion-mnist"
CACHE = RESULTS / "cache"


def base_recipe(args) -> Recipe:
    r = recipe_from_dict({
        "model": {"arch": "resnet20"},
        "data": {"source": args.data, "batch_size": 128, "calib_batches": 4,
                 "train_limit": args.train_limit},
        # the published protocols' fake-quant numbers: no bias snap (deploy numerics), like
        # --output-bits 0; benchmarks.deploy_accuracy measures srq quantize's default with it
        "quant": {"weight_bits": 4, "act_bits": 4, "output_bits": args.output_bits, "snap_biases": False},
        "dropbits": {"variant": "none", "rate": args.drop_rate, "anneal_epochs": 1,
                     "bn_reestimate_batches": 50},
        "train": {"epochs": args.epochs, "lr": args.lr, "quant_lr": args.quant_lr, "seed": 0,
                  "optimizer": "adam", "schedule": "cosine"},
    })
    return r


def float_checkpoint(args, console: Console) -> Path:
    """Train the float start once (full training split, or a fixed random subset of
    ``--pretrain-limit`` images) and cache it."""
    limit = args.pretrain_limit
    path = CACHE / f"resnet20_fmnist_float_{args.pretrain_epochs}ep{f'_{limit}' if limit else ''}.safetensors"
    if path.is_file():
        return path
    r = base_recipe(args)
    r.data.train_limit = limit
    seed_everything(0)
    with Reporter(console) as rep:
        job = Job(r, CACHE, console, rep)
        model = build_float_model(r, job.data, None)
        job.fit(model, args.pretrain_epochs, args.pretrain_lr, "float pretrain")
        info = ModelInfo("resnet20", job.data.num_classes, job.data.in_channels, job.data.image_size, r,
                         mean=job.data.mean, std=job.data.std)
        save_model(path, model, info)
    return path


def finetune_float(args, ckpt: Path, seed: int, console: Console) -> dict:
    r = base_recipe(args)
    r.model.checkpoint = str(ckpt)
    r.train.seed = seed
    seed_everything(seed)
    with Reporter(console) as rep:
        job = Job(r, CACHE, console, rep)
        model = build_float_model(r, job.data, read_state_dict(ckpt))
        history = job.fit(model, args.epochs, args.lr, "float ft")
        m = evaluate(model, job.val_loader, job.device)
    return {"top1": m.top1, "top5": m.top5, "epoch_seconds": [h.seconds for h in history]}


def srq_recipe(args, ckpt: Path, bits: int, variant: str, seed: int) -> Recipe:
    """The recipe of one SRQ row: W``bits``A``bits`` from the float start ``ckpt``."""
    r = base_recipe(args)
    r.model.checkpoint = str(ckpt)
    r.quant.weight_bits = r.quant.act_bits = bits
    r.dropbits.variant = variant
    r.train.seed = seed
    return r


def srq_run_dir(args, bits: int, variant: str, seed: int) -> Path:
    """Where that row's ``srq quantize`` run is written (cached between benchmarks)."""
    out = f"_out{args.output_bits}" if args.output_bits else ""
    return CACHE / f"srq_w{bits}_{variant}_e{args.epochs}_s{seed}{out}"


def finetune_srq(args, ckpt: Path, bits: int, variant: str, seed: int, console: Console) -> dict:
    r = srq_recipe(args, ckpt, bits, variant, seed)
    res = run_quantize(r, srq_run_dir(args, bits, variant, seed), overwrite=True, console=console)
    return {"top1": res.quant_metrics.top1, "top5": res.quant_metrics.top5,
            "float_start_top1": res.float_metrics.top1,
            "epoch_seconds": [h.seconds for h in res.history]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DATA)
    p.add_argument("--pretrain-epochs", type=int, default=6)
    p.add_argument("--pretrain-lr", type=float, default=2e-3)
    p.add_argument("--pretrain-limit", type=int, default=None,
                   help="train the float start on a fixed subset (default: all 60k images)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--quant-lr", type=float, default=1e-3)
    p.add_argument("--train-limit", type=int, default=None, help="fine-tune on a fixed subset")
    p.add_argument("--bits", type=int, nargs="+", default=[4, 3, 2])
    p.add_argument("--variants", nargs="+", default=["lsb", "none"])
    p.add_argument("--drop-rate", type=float, default=0.05)
    p.add_argument("--output-bits", type=int, default=0,
                   help="srq quantize --output-bits (0, the published protocol: outputs float)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args()
    console = Console(stderr=True)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    CACHE.mkdir(parents=True, exist_ok=True)
    name = f"fmnist_accuracy_e{args.epochs}"
    result_file = RESULTS / f"{name}.json"
    settings = dict(vars(args))
    # Which rows to run (bits, variants, seeds) does not change any row's result: a later run
    # with more of them adds rows to the same table; any training setting starts a new one.
    rows = ("bits", "variants", "seeds")
    done = json.loads(result_file.read_text()) if result_file.is_file() else {}
    if "settings" in done:
        done["settings"].setdefault("output_bits", 0)  # tables written before these options
        done["settings"].setdefault("pretrain_limit", None)
    same = {k: v for k, v in done.get("settings", {}).items() if k not in rows} == \
        {k: v for k, v in settings.items() if k not in rows}
    runs = done.get("runs", {}) if same else {}
    if same:
        for key in rows:
            settings[key] = sorted(set(done["settings"][key]) | set(settings[key]),
                                   key=(done["settings"][key] + settings[key]).index)
    ckpt = float_checkpoint(args, console)

    def record(key: str, fn, *fn_args) -> None:
        if key in runs:
            return
        runs[key] = fn(*fn_args)
        console.print(f"[bold]{key}[/]: top-1 {runs[key]['top1']:.2f}%")
        write_result(name, {"settings": settings, "float_checkpoint": ckpt.name, "runs": runs})

    for seed in args.seeds:
        record(f"float/s{seed}", finetune_float, args, ckpt, seed, console)
        for bits in args.bits:
            for variant in args.variants:
                record(f"w{bits}a{bits}/{variant}/s{seed}", finetune_srq, args, ckpt, bits, variant,
                       seed, console)

if __name__ == "__main__":
    main()
