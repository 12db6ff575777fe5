"""ImageFolder loading speed vs the training step: which one limits a run.

srq's own ImageFolder pipeline (PNG decode, RandomResizedCrop, flip, normalize, seeded
augmentation, ``make_loaders``) is timed with 0, 1, 2… DataLoader workers on real images:
Fashion-MNIST test images written once as PNGs into ``train/<class>/`` folders (cached under
``benchmarks/results/cache/``). Next to it, the training step of ResNet-20 float and SRQ at the
same batch size and input shape (``benchmarks.step_time``'s setup, median after warm-up). The
ratio loading images/s ÷ training images/s says how many times faster than training the data
arrives: below 1.0 the GPU/CPU waits for data and more ``--workers`` help; above, they don't.

On a shared CPU both compete for the same cores, so the ratio is a lower bound of what
separate data-loading cores would give; on a GPU machine it is the real answer.

    python -m benchmarks.data_loading [--batch 128] [--size 32] [--workers 0 1 2] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from benchmarks.common import RESULTS, write_result
from benchmarks.step_time import build, timed_step
from srqcli.data import DataSpec, load_datasets, make_loaders
from srqcli.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from srqcli.train.loop import resolve_device, to_device

FASHION = Path("/usr/share/datasets/fashion-mnist")
TRAIN_CONFIGS = ("float", "srq")


def image_folder(idx_dir: Path, per_class: int) -> Path:
    """``per_class`` Fashion-MNIST test images per class as PNGs (train/), 2 per class in val/."""
    root = RESULTS / "cache" / f"fmnist_imagefolder_{per_class}"
    if (root / "val").is_dir():
        return root
    images = read_idx(idx_dir / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC)
    labels = read_idx(idx_dir / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC)
    tmp = root.with_name(root.name + ".partial")
    written = {"train": [0] * 10, "val": [0] * 10}
    for image, label in zip(images, labels):
        split = "train" if written["train"][label] < per_class else "val"
        if written[split][label] >= (per_class if split == "train" else 2):
            continue
        folder = tmp / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{written[split][label]}.png")
        written[split][label] += 1
    tmp.rename(root)  # complete or absent: an interrupted run starts over
    return root


def loading_rate(root: Path, size: int, batch: int, workers: int, batches: int, warmup: int,
                 device: torch.device) -> float:
    """Images/s of srq's training loader, including the copy to ``device``."""
    bundle = load_datasets(DataSpec(str(root), image_size=size, workers=workers))
    loader, _ = make_loaders(bundle, batch, workers, seed=0)
    needed = warmup + batches
    if len(loader) < needed:
        raise SystemExit(f"{root} gives {len(loader)} batches of {batch}; need {needed}: "
                         "raise --per-class or lower --batches")
    iterator = iter(loader)
    for _ in range(warmup):  # worker start-up and first decodes are not the steady state
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        images, _labels = next(iterator)
        to_device(images, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch / (time.perf_counter() - start)


def training_rate(arch: str, bits: int, batch: int, size: int, rounds: int, warmup: int
                  ) -> dict[str, float]:
    """Images/s of one optimizer step per configuration (alternating rounds, median)."""
    setups = {c: build(c, arch, bits, batch, 3, size) for c in TRAIN_CONFIGS}
    for config, setup in setups.items():
        for _ in range(warmup):
            timed_step(config, *setup)
    times: dict[str, list[float]] = {c: [] for c in TRAIN_CONFIGS}
    for _ in range(rounds):
        for config in TRAIN_CONFIGS:
            times[config].append(timed_step(config, *setups[config]))
    return {c: batch / statistics.median(t) for c, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--bits", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32, help="crop size fed to the model")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--per-class", type=int, default=500, help="training PNGs per class")
    # Many batches: workers prefetch 2 batches each ahead of the timer, which must not count.
    p.add_argument("--batches", type=int, default=30, help="timed loader batches per setting")
    p.add_argument("--rounds", type=int, default=10, help="timed training steps per configuration")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--idx", type=Path, default=FASHION, help="folder with Fashion-MNIST IDX files")
    p.add_argument("--quick", action="store_true",
                   help="check that it runs: tiny settings, no result file")
    args = p.parse_args()
    if args.quick:
        args.batch, args.per_class, args.batches, args.rounds, args.warmup = 32, 16, 2, 2, 1
    device = resolve_device("auto")
    root = image_folder(args.idx, args.per_class)
    loading = {w: loading_rate(root, args.size, args.batch, w, args.batches, args.warmup, device)
               for w in args.workers}
    training = training_rate(args.arch, args.bits, args.batch, args.size, args.rounds, args.warmup)
    ratios = {w: {c: loading[w] / training[c] for c in TRAIN_CONFIGS} for w in args.workers}

    print(f"{args.arch} W{args.bits}A{args.bits} vs ImageFolder PNG loading, batch {args.batch}, "
          f"3x{args.size}x{args.size}, {torch.get_num_threads()} threads, device {device}")
    print("  training:  " + "   ".join(f"{c} {training[c]:,.0f} img/s" for c in TRAIN_CONFIGS))
    for w in args.workers:
        side = "   ".join(f"{ratios[w][c]:.2f}x {c}" for c in TRAIN_CONFIGS)
        print(f"  loading, {w} workers: {loading[w]:8,.0f} img/s   = {side}")
    if args.quick:
        return
    write_result(f"data_loading_{args.arch}_w{args.bits}_b{args.batch}", {
        "arch": args.arch, "bits": args.bits, "batch": args.batch, "input": [3, args.size, args.size],
        "device": str(device), "images_per_class": args.per_class, "timed_batches": args.batches,
        "rounds": args.rounds, "loading_images_per_s": loading, "training_images_per_s": training,
        "loading_to_training_ratio": ratios})


if __name__ == "__main__":
    main()
