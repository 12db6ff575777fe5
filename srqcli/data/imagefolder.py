"""ImageFolder datasets (``DIR/train/<class>/*`` and ``DIR/val/<class>/*``), e.g. ImageNet.

Uses the standard ImageNet recipe (RandomResizedCrop + flip for training, resize + center
crop for validation) because torchvision architectures and their published accuracies assume
exactly this preprocessing. Its values (sizes, mean/std, interpolation, RGB or grayscale) come
from the :class:`DataSpec`: a model's own preprocessing (:mod:`srqcli.preprocessing`), by
default ImageNet's at 224 px in the model's channels.

Unreadable images (truncated downloads, HTML error pages saved as ``.jpg``, zero-byte files)
are found lazily, when a sample is loaded, rather than by a scan up front: a scan that only
reads headers misses truncated image data, one that decodes everything costs a full pass over
ImageNet on every run, and the decode that training does anyway finds every defect for free.
An unreadable image is replaced by the next readable sample of the split, which keeps batches
full and the run deterministic (the replacement depends only on the index and the files, not
on workers or timing); ``strict`` makes it an error instead.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from srqcli.data.spec import DatasetBundle, DataSpec
from srqcli.data.views import SplitView, limited_indices
from srqcli.errors import SrqError, short_reason
from srqcli.preprocessing import Preprocessing

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: For grayscale images: ImageNet's statistics averaged over the three channels.
IMAGENET_GRAY_MEAN = (round(sum(IMAGENET_MEAN) / 3, 3),)
IMAGENET_GRAY_STD = (round(sum(IMAGENET_STD) / 3, 3),)
DEFAULT_SIZE = 224
CROP_RATIO = 0.875  # 224 / 256, the usual validation resize-then-crop ratio


def is_imagefolder(directory: Path) -> bool:
    """Whether ``directory`` looks like it was meant as an ImageFolder tree."""
    return (directory / "train").is_dir() or (directory / "val").is_dir()


class CheckedImageFolder(ImageFolder):
    """An ImageFolder that replaces unreadable images by the next readable one (or, when
    ``strict``, raises :class:`SrqError` naming the file).

    Which samples are unreadable is kept in a shared-memory flag tensor, so DataLoader workers
    skip a file another worker already found bad, and :attr:`unreadable_count` is the exact
    number of distinct bad files met so far by all of them.
    """

    def __init__(self, root: str, transform: T.Compose, *, strict: bool, mode: str = "RGB") -> None:
        # allow_empty: an empty class folder is harmless; only a split with no images is fatal.
        super().__init__(root, transform=transform, allow_empty=True,
                         loader=functools.partial(open_image, mode=mode))
        self.strict = strict
        self.unreadable = torch.zeros(len(self.samples), dtype=torch.bool).share_memory_()

    @property
    def unreadable_count(self) -> int:
        return int(self.unreadable.sum())

    def __getitem__(self, index: int) -> tuple[Any, int]:
        count = len(self.samples)
        for offset in range(count):
            candidate = (index + offset) % count
            if self.unreadable[candidate]:
                continue
            path, target = self.samples[candidate]
            try:
                image = self.loader(path)
            # The loader's only input is the user's file: whatever it raises (PIL's OSError,
            # SyntaxError, ValueError, DecompressionBombError, ...) means "unreadable".
            except Exception as exc:  # noqa: BLE001
                self._unreadable(candidate, path, exc)
                continue
            return self.transform(image), target
        raise SrqError(f"no readable image in {self.root}; every file failed to decode")

    def _unreadable(self, index: int, path: str, exc: Exception) -> None:
        # PIL's own text for these repeats the path inside a file-object repr.
        reason = "not an image format PIL can read" if isinstance(exc, UnidentifiedImageError) \
            else short_reason(exc)
        if self.strict:
            raise SrqError(f"unreadable image {path}: {reason} (without --strict it is skipped)")
        self.unreadable[index] = True
        log.warning("warning: skipped unreadable image %s (%s); %d unreadable in this split so far",
                    path, reason, self.unreadable_count)


def open_image(path: str, mode: str) -> Image.Image:
    """An image file converted to ``mode`` (``"RGB"`` or ``"L"``, grayscale), as torchvision's
    own loader does for RGB only. A partial of it, unlike a lambda, pickles into DataLoader
    workers."""
    with open(path, "rb") as f:
        return Image.open(f).convert(mode)


def resolve_preprocessing(spec: DataSpec) -> Preprocessing:
    """The spec's preprocessing with every unset value filled in: 224 px, resized by 1/0.875,
    bilinear, RGB, ImageNet's mean/std (their channel average for grayscale)."""
    channels = spec.channels or 3
    size = spec.image_size or DEFAULT_SIZE
    gray = channels == 1
    return Preprocessing(
        image_size=size, resize_size=spec.resize_size or round(size / CROP_RATIO),
        mean=spec.mean or (IMAGENET_GRAY_MEAN if gray else IMAGENET_MEAN),
        std=spec.std or (IMAGENET_GRAY_STD if gray else IMAGENET_STD),
        channels=channels, interpolation=spec.interpolation or "bilinear",
    )


def _open_split(root: Path, split: str, transform: T.Compose, strict: bool, mode: str) -> CheckedImageFolder:
    directory = root / split
    layout = f"expected {root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg (or .png, ...)"
    if not directory.is_dir():
        raise SrqError(f"{directory} is missing; {layout}")
    try:
        dataset = CheckedImageFolder(str(directory), transform, strict=strict, mode=mode)
    except FileNotFoundError as exc:
        raise SrqError(f"{directory} has no class folders; {layout}") from exc
    if len(dataset) == 0:
        raise SrqError(f"{directory} has no images; {layout}")
    return dataset


def load_imagefolder(root: Path, spec: DataSpec) -> DatasetBundle:
    """ImageFolder splits with matching class lists, prepared as :func:`resolve_preprocessing` says."""
    p = resolve_preprocessing(spec)
    resample = T.InterpolationMode(p.interpolation)
    normalize = [T.ToTensor(), T.Normalize(p.mean, p.std)]
    mode = "L" if p.channels == 1 else "RGB"
    train_set = _open_split(
        root, "train",
        T.Compose([T.RandomResizedCrop(p.image_size, interpolation=resample), T.RandomHorizontalFlip(),
                   *normalize]),
        spec.strict, mode,
    )
    val_set = _open_split(
        root, "val",
        T.Compose([T.Resize(p.resize_size, interpolation=resample), T.CenterCrop(p.image_size), *normalize]),
        spec.strict, mode,
    )
    if train_set.classes != val_set.classes:
        only_train = sorted(set(train_set.classes) - set(val_set.classes))
        only_val = sorted(set(val_set.classes) - set(train_set.classes))
        raise SrqError(
            f"class folders of {root}/train and {root}/val differ "
            f"(only in train: {', '.join(only_train) or '-'}; "
            f"only in val: {', '.join(only_val) or '-'}); "
            "make both splits contain the same class folders"
        )
    if len(train_set.classes) < 2:
        raise SrqError(f"{root}/train has only one class folder; classification needs at least 2")
    train = SplitView(train_set, limited_indices(len(train_set), spec.train_limit))
    val = SplitView(val_set, limited_indices(len(val_set), spec.val_limit))
    num_classes = len(train_set.classes)
    return DatasetBundle(
        train=train,
        val=val,
        num_classes=num_classes,
        in_channels=p.channels,
        image_size=p.image_size,
        class_names=list(train_set.classes),
        kind="imagefolder",
        description=(
            f"ImageFolder at {root.resolve()}, "
            f"{len(train)} train / {len(val)} val, {num_classes} classes"
        ),
        mean=p.mean,
        std=p.std,
        preprocessing=p,
    )
