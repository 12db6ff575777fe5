"""ImageFolder datasets (``DIR/train/<class>/*`` and ``DIR/val/<class>/*``), e.g. ImageNet.

Uses the standard ImageNet recipe (RandomResizedCrop + flip for training, resize + center
crop for validation, ImageNet mean/std) because torchvision architectures and their
published accuracies assume exactly this preprocessing.
"""

from __future__ import annotations

from pathlib import Path

from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from srqcli.data.spec import DatasetBundle, DataSpec
from srqcli.data.views import SplitView, limited_indices
from srqcli.errors import SrqError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = 224
CROP_RATIO = 0.875  # 224 / 256, the usual validation resize-then-crop ratio


def is_imagefolder(directory: Path) -> bool:
    """Whether ``directory`` looks like it was meant as an ImageFolder tree."""
    return (directory / "train").is_dir() or (directory / "val").is_dir()


def _open_split(root: Path, split: str, transform: T.Compose) -> ImageFolder:
    directory = root / split
    layout = f"expected {root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg (or .png, ...)"
    if not directory.is_dir():
        raise SrqError(f"{directory} is missing; {layout}")
    try:
        # allow_empty: an empty class folder is harmless; only a split with no images is fatal.
        dataset = ImageFolder(str(directory), transform=transform, allow_empty=True)
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
        root, "train", T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *normalize])
    )
    val_set = _open_split(root, "val", T.Compose([T.Resize(resize), T.CenterCrop(size), *normalize]))
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
