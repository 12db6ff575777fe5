"""MNIST-style IDX datasets (MNIST, Fashion-MNIST, KMNIST, ...), read with numpy.

Reading the four files directly (instead of via ``torchvision.datasets.MNIST``) accepts the
layouts people actually have on disk (flat, ``raw/``, torchvision's ``FashionMNIST/raw/``,
gzipped or not) and lets a truncated or mislabeled file fail with a message naming it.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from srqcli.data.spec import DatasetBundle, DataSpec
from srqcli.data.views import SplitView, TensorImages, TensorTransform, limited_indices
from srqcli.errors import SrqError

NATURAL_SIZE = 28
IMAGES_MAGIC = 2051  # 0x0803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x0801: unsigned bytes, 1 dimension
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "val_images": "t10k-images-idx3-ubyte",
    "val_labels": "t10k-labels-idx1-ubyte",
}
_SUBDIRS = (".", "raw", "FashionMNIST/raw", "MNIST/raw")
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def find_idx_files(directory: Path) -> dict[str, Path] | None:
    """The four IDX files under ``directory`` (or a known subfolder), None if there are none.

    A folder holding only some of them is an error rather than "not IDX", because the user
    almost certainly meant it as an IDX dataset.
    """
    for sub in _SUBDIRS:
        base = directory / sub
        found = {}
        for key, name in FILES.items():
            for candidate in (base / name, base / f"{name}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if not found:
            continue
        missing = [f"{name}[.gz]" for key, name in FILES.items() if key not in found]
        if missing:
            raise SrqError(f"{base.resolve()} has IDX files but is missing {', '.join(missing)}")
        return found
    return None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes, checking magic number and exact size."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise SrqError(f"cannot read {path}: {exc}; re-download or re-extract it") from exc
    ndim = magic - 2048
    header = 4 + 4 * ndim
    found_magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found_magic != magic:
        kind = "image" if magic == IMAGES_MAGIC else "label"
        raise SrqError(
            f"{path} is not an IDX {kind} file (magic number {found_magic}, expected {magic})"
        )
    if len(data) < header:
        raise SrqError(f"{path} is truncated (header cut short); re-download or re-extract it")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) - header != math.prod(shape):
        raise SrqError(
            f"{path} is truncated or corrupt: shape {shape} needs {math.prod(shape)} bytes of data, "
            f"found {len(data) - header}; re-download or re-extract it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise SrqError(
            f"{labels_path} has {len(labels)} labels but {images_path} has {len(images)} images; "
            "the files belong to different datasets or one is damaged"
        )
    if images.size == 0:
        raise SrqError(f"{images_path} contains no images")
    return images, labels


def _mean_std(images: np.ndarray) -> tuple[float, float]:
    """Mean/std of pixel values in [0, 1] via a 256-bin histogram: exact, without a float copy
    of the whole training set."""
    counts = np.bincount(images.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256) / 255.0
    total = counts.sum()
    mean = float((counts * values).sum() / total)
    var = float((counts * values**2).sum() / total) - mean**2
    std = math.sqrt(max(var, 0.0))
    return mean, std if std > 0 else 1.0


def load_idx(directory: Path, files: dict[str, Path], spec: DataSpec) -> DatasetBundle:
    """Train = ``train-*`` files, val = ``t10k-*`` files; 1 channel, normalized with train stats."""
    train_images, train_labels = _read_split(files["train_images"], files["train_labels"])
    val_images, val_labels = _read_split(files["val_images"], files["val_labels"])
    if train_images.shape[1:] != val_images.shape[1:]:
        raise SrqError(
            f"{files['train_images']} has {train_images.shape[1:]} images but "
            f"{files['val_images']} has {val_images.shape[1:]}; both splits must match"
        )
    if train_images.shape[1] != train_images.shape[2]:
        raise SrqError(f"{files['train_images']} has non-square images {train_images.shape[1:]}")
    num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    if num_classes < 2:
        raise SrqError(f"{files['train_labels']} has only one class; classification needs at least 2")

    stored = train_images.shape[1]
    size = spec.image_size or stored
    mean, std = _mean_std(train_images)
    train = SplitView(
        TensorImages(
            torch.from_numpy(train_images).unsqueeze(1),
            torch.from_numpy(train_labels).long(),
            TensorTransform(size, stored, mean, std, augment=True),
        ),
        limited_indices(len(train_labels), spec.train_limit),
    )
    val = SplitView(
        TensorImages(
            torch.from_numpy(val_images).unsqueeze(1),
            torch.from_numpy(val_labels).long(),
            TensorTransform(size, stored, mean, std, augment=False),
        ),
        limited_indices(len(val_labels), spec.val_limit),
    )
    fashion = "fashion" in str(directory.resolve()).lower() and num_classes == len(FASHION_CLASSES)
    name = "Fashion-MNIST" if fashion else "MNIST-style"
    return DatasetBundle(
        train=train,
        val=val,
        num_classes=num_classes,
        in_channels=1,
        image_size=size,
        class_names=list(FASHION_CLASSES) if fashion else [str(label) for label in range(num_classes)],
        kind="idx",
        description=(
            f"{name} IDX at {files['train_images'].parent.resolve()}, "
            f"{_count(train, train_labels)} train / {_count(val, val_labels)} val, {num_classes} classes"
        ),
        mean=(mean,),
        std=(std,),
    )


def _count(view: SplitView, labels: np.ndarray) -> str:
    return str(len(view)) if len(view) == len(labels) else f"{len(view)} of {len(labels)}"
