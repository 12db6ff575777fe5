"""MNIST-style IDX reader, on tiny files written by the tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import idx_bytes

from srqcli.data import DataSpec, load_datasets
from srqcli.errors import SrqError

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx_dataset(
    directory: Path, *, gz: bool = False, n_train: int = 12, n_val: int = 6, size: int = 28
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 3,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_val, size, size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_val, dtype=np.uint8) % 3,
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("sub", [".", "raw", "FashionMNIST/raw"])
def test_reads_plain_and_gzipped_layouts(tmp_path: Path, gz: bool, sub: str) -> None:
    arrays = write_idx_dataset(tmp_path / sub, gz=gz)
    bundle = load_datasets(DataSpec(str(tmp_path)))
    assert bundle.kind == "idx"
    assert (len(bundle.train), len(bundle.val)) == (12, 6)
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (3, 1, 28)
    assert bundle.class_names == ["0", "1", "2"]
    train = arrays["train-images-idx3-ubyte"]
    mean, std = train.mean() / 255, train.std() / 255
    assert bundle.mean[0] == pytest.approx(mean) and bundle.std[0] == pytest.approx(std)
    image, label = bundle.val[4]
    expected = (torch.from_numpy(arrays["t10k-images-idx3-ubyte"][4]).float() / 255 - mean) / std
    assert torch.allclose(image[0], expected.float(), atol=1e-5)
    assert label == 4 % 3


def test_resizes_when_image_size_differs(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    bundle = load_datasets(DataSpec(str(tmp_path), image_size=32))
    assert bundle.image_size == 32
    assert bundle.train[(0, 0)][0].shape == bundle.val[0][0].shape == (1, 32, 32)


def test_bad_magic_names_the_file(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte"
    (tmp_path / "train-images-idx3-ubyte").write_bytes(labels.read_bytes())
    with pytest.raises(SrqError, match=r"train-images-idx3-ubyte is not an IDX image file"):
        load_datasets(DataSpec(str(tmp_path)))


def test_truncated_file(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(SrqError, match=r"t10k-images-idx3-ubyte is truncated") as info:
        load_datasets(DataSpec(str(tmp_path)))
    assert "\n" not in str(info.value)


def test_truncated_gzip(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, gz=True)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:200])
    with pytest.raises(SrqError, match=r"cannot read .*train-images-idx3-ubyte\.gz"):
        load_datasets(DataSpec(str(tmp_path)))


def test_label_count_must_match_image_count(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5, dtype=np.uint8)))
    with pytest.raises(SrqError, match="has 5 labels but .* has 12 images"):
        load_datasets(DataSpec(str(tmp_path)))


def test_missing_file_is_named(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(SrqError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]"):
        load_datasets(DataSpec(str(tmp_path)))


def test_single_class_is_rejected(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    for name, count in [("train-labels-idx1-ubyte", 12), ("t10k-labels-idx1-ubyte", 6)]:
        (tmp_path / name).write_bytes(idx_bytes(np.zeros(count, dtype=np.uint8)))
    with pytest.raises(SrqError, match="at least 2"):
        load_datasets(DataSpec(str(tmp_path)))


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason="Fashion-MNIST not installed")
def test_real_fashion_mnist() -> None:
    bundle = load_datasets(DataSpec(str(REAL_FASHION), train_limit=1000))
    assert (len(bundle.train), len(bundle.val), bundle.num_classes) == (1000, 10000, 10)
    assert bundle.class_names[0] == "T-shirt/top"
    assert bundle.mean[0] == pytest.approx(0.2860, abs=1e-3)
    assert bundle.std[0] == pytest.approx(0.3530, abs=1e-3)
    assert bundle.description.startswith("Fashion-MNIST IDX at ")
    assert "1000 of 60000 train / 10000 val" in bundle.description
