"""Training throughput at ImageNet scale: torchvision ResNet-18 at 224×224, synthetic input.

Images/s of srq's own training loop (:func:`srqcli.train.loop.train_epoch`: forward, backward,
optimizer step, quantizer projection, bf16 autocast and channels-last on CUDA) for float,
SRQ W3A3 and LSQ W3A3, each eager and under ``torch.compile``; and the hours one ImageNet
epoch (1,281,167 images) would take at that rate. Synthetic batches on the device, so data
loading is left out: this is speed only, never accuracy.

Protocol (docs/benchmark-protocol.md): every configuration lives in one process and is timed
in alternating rounds (A B C … A B C …) after warm-up; reported: the median images/s over
rounds and the median of per-round step-time ratios to float (same compile mode) and, for
SRQ, to LSQ. On CUDA each timed round ends
with the loop's own per-step synchronisation (it reads the loss every step).

    python -m benchmarks.throughput --device cuda
    python -m benchmarks.throughput --device cpu --batch 2 --size 64 --steps 1 --rounds 1 \
        --compile off   # smoke test
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch
from torch import nn

from benchmarks.common import write_result
from srqcli.config import QuantConfig, TrainConfig
from srqcli.models import build_model
from srqcli.nn.surgery import quantize_model
from srqcli.train.loop import build_optimizer, train_epoch

IMAGENET_TRAIN_IMAGES = 1_281_167
METHODS = ("float", "srq", "lsq")


def build(method: str, compiled: bool, args: argparse.Namespace, device: torch.device
          ) -> tuple[nn.Module, Any, Any, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A seeded ResNet-18 (quantized at W{bits}A{bits} unless float), its optimizer and the
    synthetic batches of one timed round."""
    torch.manual_seed(0)
    model = build_model(args.arch, 1000, 3).to(device)
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).to(memory_format=layout)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    if method != "float":
        model, _ = quantize_model(model, QuantConfig(method=method, weight_bits=args.bits,
                                                     act_bits=args.bits), [x])
    opt, sched = build_optimizer(model, TrainConfig(), 1e-4, 10**9)
    if compiled:
        model = torch.compile(model)
    return model, opt, sched, [(x, y)] * args.steps


def images_per_s(setup, device: torch.device, amp: bool) -> float:
    model, opt, sched, batches = setup
    return train_epoch(model, batches, opt, sched, device, amp=amp, reporter=None, label="")[2]


def _median_ratio(faster: list[float], slower: list[float]) -> float:
    """Median over rounds of the step-time ratio ``slower / faster`` from their images/s."""
    return statistics.median(f / s for f, s in zip(faster, slower))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--bits", type=int, default=3)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=20, help="training steps per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds (torch.compile happens here)")
    p.add_argument("--compile", choices=("both", "on", "off"), default="both")
    p.add_argument("--no-amp", action="store_true", help="float32 on CUDA (default: bf16 autocast)")
    args = p.parse_args()
    device = torch.device(args.device)
    amp = not args.no_amp and device.type == "cuda"
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.compile]
    configs = [f"{m}{' compiled' if c else ''}" for c in modes for m in METHODS]
    setups = {name: build(name.split()[0], name.endswith("compiled"), args, device) for name in configs}
    for s in setups.values():
        for _ in range(args.warmup):
            images_per_s(s, device, amp)
    rates: dict[str, list[float]] = {c: [] for c in configs}
    for _ in range(args.rounds):
        for c in configs:
            rates[c].append(images_per_s(setups[c], device, amp))
    summary = {}
    for c, r in rates.items():
        same_mode = rates[c.replace(c.split()[0], "float", 1)]
        summary[c] = {"images_per_s": statistics.median(r),
                      "time_ratio_to_float": _median_ratio(same_mode, r),
                      "imagenet_epoch_hours": IMAGENET_TRAIN_IMAGES / statistics.median(r) / 3600}
        if c.startswith("srq"):  # the target: SRQ step time ≤ 1.3× LSQ's
            summary[c]["time_ratio_to_lsq"] = _median_ratio(rates[c.replace("srq", "lsq", 1)], r)
    print(f"{args.arch} {args.size}×{args.size}, batch {args.batch}, {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"{'bf16 autocast' if amp else 'float32'}, median of {args.rounds} rounds × {args.steps} steps")
    for c, s in summary.items():
        vs_lsq = f"  {s['time_ratio_to_lsq']:.2f}× LSQ's time" if "time_ratio_to_lsq" in s else ""
        print(f"  {c:13s} {s['images_per_s']:9.1f} img/s  {s['imagenet_epoch_hours']:7.2f} h per ImageNet "
              f"epoch  {s['time_ratio_to_float']:.2f}× float's time{vs_lsq}")
    write_result(f"throughput_{args.arch}_{device.type}", {
        "arch": args.arch, "bits": args.bits, "batch": args.batch, "size": args.size,
        "steps": args.steps, "rounds": args.rounds, "amp": amp, "device": device.type,
        "images_per_s": {c: r for c, r in rates.items()}, "summary": summary})


if __name__ == "__main__":
    main()
