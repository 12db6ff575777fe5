"""The built-in example dataset: scikit-learn's digits, so ``srq`` can be tried offline.

``load_digits`` ships inside scikit-learn (1797 8x8 images, no download). The images are
upscaled once to MNIST size so the same models and recipes apply, and split 80/20 with a
fixed stratified split so the validation score is on held-out images.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from srqcli.data.spec import DatasetBundle, DataSpec
from srqcli.data.views import SplitView, TensorImages, TensorTransform, limited_indices

NATURAL_SIZE = 28


@functools.lru_cache(maxsize=2)
def _digits(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as ``(N, 1, size, size)`` floats in [0, 1] and int64 labels (cached: the
    bilinear upscale is the slow part and repeated runs in one process reuse it)."""
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.clamp_(0.0, 1.0), torch.as_tensor(digits.target, dtype=torch.int64)


def load_example(spec: DataSpec) -> DatasetBundle:
    """Digits as a 1-channel, 10-class dataset; normalization statistics from train only."""
    size = spec.image_size or NATURAL_SIZE
    images, labels = _digits(size)
    train_idx, val_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=0.2, stratify=labels.numpy(), random_state=0
    )
    train_images, val_images = images[train_idx], images[val_idx]
    mean, std = train_images.mean().item(), train_images.std().item()
    train_transform = TensorTransform(size, size, mean, std, augment=True)
    val_transform = TensorTransform(size, size, mean, std, augment=False)
    train = SplitView(
        TensorImages(train_images, labels[train_idx], train_transform),
        limited_indices(len(train_idx), spec.train_limit),
    )
    val = SplitView(
        TensorImages(val_images, labels[val_idx], val_transform),
        limited_indices(len(val_idx), spec.val_limit),
    )
    return DatasetBundle(
        train=train,
        val=val,
        num_classes=10,
        in_channels=1,
        image_size=size,
        class_names=[str(digit) for digit in range(10)],
        kind="example",
        description=(
            f"scikit-learn digits (8x8 upscaled to {size}x{size}), "
            f"{len(train)} train / {len(val)} val, 10 classes"
        ),
        mean=(mean,),
        std=(std,),
    )
