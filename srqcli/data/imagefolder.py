"""ImageFolder datasets (``DIR/train/<class>/*`` and ``DIR/val/<class>/*``), e.g. ImageNet.

Uses the standard ImageNet recipe (RandomResizedCrop + flip for training, resize + center
crop for validation, ImageNet mean/std) because torchvision architectures and their
published accuracies assume exactly this preprocessing.

Unreadable images (truncated downloads, HTML error pages saved as ``.jpg``, zero-byte files)
are found lazily, when a sample is loaded, rather than by a scan up front: a scan that only
reads headers misses truncated image data, one that decodes everything costs a full pass over
ImageNet on every run, and the decode that training does anyway finds every defect for free.
An unreadable image is replaced by the next readable sample of the split, which keeps batches
full and the run deterministic (the replacement depends only on the index and the files, not
on workers or timing); ``strict`` makes it an error instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from PIL import UnidentifiedImageError
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from srqcli.data.spec import DatasetBundle, DataSpec
from srqcli.data.views import SplitView, limited_indices
from srqcli.errors import SrqError, short_reason

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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

    def __init__(self, root: str, transform: T.Compose, *, strict: bool) -> None:
        # allow_empty: an empty class folder is harmless; only a split with no images is fatal.
        super().__init__(root, transform=transform, allow_empty=True)
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


def _open_split(root: Path, split: str, transform: T.Compose, strict: bool) -> CheckedImageFolder:
    directory = root / split
    layout = f"expected {root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg (or .png, ...)"
    if not directory.is_dir():
        raise SrqError(f"{directory} is missing; {layout}")
    try:
        dataset = CheckedImageFolder(str(directory), transform, strict=strict)
    except FileNotFoundError as exc:
        raise SrqError(f"{directory} has no class folders; {layout}") from exc
    if len(dataset) == 0:
        raise SrqError(f"{directory} has no images; {layout}")
    return dataset


def load_imagefolder(root: Path, spec: DataSpec) -> DatasetBundle:
    """RGB ImageFolder splits with matching class lists, ImageNet-normalized."""
    size = spec.image_size or DEFAULT_SIZE
    resize = spec.resize_size or round(size / CROP_RATIO)
    if resize < size:
        raise SrqError(
            f"resize size {resize} is smaller than image size {size}; use a resize size >= {size}"
        )
    normalize = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train_set = _open_split(
        root, "train", T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *normalize]),
        spec.strict,
    )
    val_set = _open_split(
        root, "val", T.Compose([T.Resize(resize), T.CenterCrop(size), *normalize]), spec.strict
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
        in_channels=3,
        image_size=size,
        class_names=list(train_set.classes),
        kind="imagefolder",
        description=(
            f"ImageFolder at {root.resolve()}, "
            f"{len(train)} train / {len(val)} val, {num_classes} classes"
        ),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
