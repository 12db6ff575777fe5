"""Dataset wrappers shared by every data source.

Augmentation randomness is the reason these exist: torchvision transforms draw from torch's
global RNG, which with ``workers=0`` is whatever the training code last left there. Instead
the train sampler (see :mod:`srqcli.data.loaders`) hands each sample a seed drawn from the
DataLoader's generator, and :class:`SplitView` applies the transform under that seed, so the
augmentation of a run depends only on the loader seed, with any number of workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class TensorImages(Dataset):
    """Images held in memory as one ``(N, C, H, W)`` tensor (uint8 or float in [0, 1])."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


class TensorTransform:
    """Image tensor (uint8, or float in [0, 1]) -> normalized float, resized to ``size`` if
    stored at another size, and on training data shifted by up to 2 px at random.

    Hand-written rather than a torchvision ``Compose`` because it is ~4x faster per sample,
    and MNIST-sized models consume samples faster than the generic transforms produce them.
    The shift pads with 0 *before* normalizing, i.e. with the black background of
    digit/clothing images.
    """

    SHIFT = 2

    def __init__(self, size: int, stored_size: int, mean: float, std: float, augment: bool) -> None:
        self.size = size
        self.resize = size != stored_size
        self.mean = mean
        self.std = std
        self.augment = augment

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        # Copy: the in-place ops below must not touch the stored dataset.
        x = image.to(torch.float32, copy=True)
        if image.dtype == torch.uint8:
            x.div_(255.0)
        if self.resize:
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", antialias=True)[0]
        if self.augment:
            dy, dx = torch.randint(0, 2 * self.SHIFT + 1, (2,)).tolist()
            x = F.pad(x, (self.SHIFT,) * 4)[:, dy : dy + self.size, dx : dx + self.size]
        return x.sub(self.mean).div_(self.std)


class SplitView(Dataset):
    """One split as the loaders see it: an optional fixed subset of ``base``, indexable either
    by a plain index (global RNG, for ad-hoc use) or by ``(index, seed)`` (seeded RNG)."""

    def __init__(self, base: Dataset, indices: Sequence[int] | None = None) -> None:
        self.base = base
        self.indices = indices

    def __len__(self) -> int:
        if self.indices is not None:
            return len(self.indices)
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        if not isinstance(key, tuple):
            return self.base[self._base_index(key)]
        index, seed = key
        # Only the CPU generator: torch.manual_seed would also reseed CUDA behind our back.
        saved = torch.get_rng_state()
        torch.default_generator.manual_seed(seed)
        try:
            return self.base[self._base_index(index)]
        finally:
            torch.set_rng_state(saved)

    def _base_index(self, index: int) -> int:
        return self.indices[index] if self.indices is not None else index


def limited_indices(size: int, limit: int | None) -> list[int] | None:
    """A fixed (seed 0), sorted random subset of ``limit`` of ``size`` indices; None for all."""
    if limit is None or limit >= size:
        return None
    generator = torch.Generator().manual_seed(0)
    return sorted(torch.randperm(size, generator=generator)[:limit].tolist())
