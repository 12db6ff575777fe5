"""The built-in example dataset (scikit-learn digits)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from sklearn.datasets import load_digits

from srqcli.data import DataSpec, load_datasets
from srqcli.errors import SrqError


@pytest.fixture(scope="module")
def bundle():
    return load_datasets(DataSpec("example"))


def test_shapes_and_metadata(bundle) -> None:
    assert (len(bundle.train), len(bundle.val)) == (1437, 360)
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (10, 1, 28)
    assert bundle.kind == "example"
    assert bundle.class_names == [str(d) for d in range(10)]
    image, label = bundle.train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert isinstance(label, int) and 0 <= label < 10
    assert "1437 train / 360 val" in bundle.description and "\n" not in bundle.description


def test_split_is_a_stratified_partition(bundle) -> None:
    # Stored images are the upscaled originals (before augmentation and normalization).
    train_images = bundle.train.base.images
    val_images = bundle.val.base.images
    train_keys = Counter(img.numpy().tobytes() for img in train_images)
    val_keys = Counter(img.numpy().tobytes() for img in val_images)
    assert not set(train_keys) & set(val_keys)
    val_counts = Counter(bundle.val.base.labels.tolist())
    total_counts = Counter(load_digits().target.tolist())
    for digit, count in total_counts.items():
        assert abs(val_counts[digit] - 0.2 * count) <= 1


def test_normalization_uses_train_statistics(bundle) -> None:
    train_images = bundle.train.base.images
    assert bundle.mean[0] == pytest.approx(train_images.mean().item())
    val = torch.stack([bundle.val[i][0] for i in range(len(bundle.val))])
    assert abs(val.mean().item()) < 0.1 and abs(val.std().item() - 1) < 0.1


def test_val_is_deterministic_and_train_augmentation_is_seeded(bundle) -> None:
    assert torch.equal(bundle.val[3][0], bundle.val[3][0])
    state = torch.get_rng_state()
    first = bundle.train[(5, 1234)][0]
    assert torch.equal(first, bundle.train[(5, 1234)][0])
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    shifted = [bundle.train[(5, seed)][0] for seed in range(10)]
    assert any(not torch.equal(first, other) for other in shifted)


def test_limits_and_image_size() -> None:
    small = load_datasets(DataSpec("example", train_limit=100, val_limit=50, image_size=32))
    assert (len(small.train), len(small.val)) == (100, 50)
    assert small.train[0][0].shape == (1, 32, 32)
    again = load_datasets(DataSpec("example", train_limit=100))
    assert small.train.indices == again.train.indices


@pytest.mark.parametrize("field", ["batch_size", "image_size", "train_limit", "val_limit"])
def test_spec_rejects_non_positive_values(field: str) -> None:
    with pytest.raises(SrqError, match="must be at least 1"):
        DataSpec("example", **{field: 0})


def test_spec_rejects_negative_workers() -> None:
    with pytest.raises(SrqError, match="workers"):
        DataSpec("example", workers=-1)
