"""ImageFolder datasets built from tiny PNGs, and source-path errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from srqcli.data import DataSpec, load_datasets, make_loaders
from srqcli.errors import SrqError


def write_images(folder: Path, count: int, mode: str = "RGB") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new(mode, (20 + i, 18), color=40 * i if mode == "L" else (40 * i, 10, 200)).save(
            folder / f"{i}.png"
        )


def make_tree(root: Path, train: dict[str, int], val: dict[str, int]) -> Path:
    for split, classes in [("train", train), ("val", val)]:
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            write_images(root / split / name, count, mode="L" if name == "gray" else "RGB")
    return root


def test_loads_classes_and_shapes(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"cat": 3, "dog": 2, "gray": 2}, {"cat": 1, "dog": 1, "gray": 1})
    bundle = load_datasets(DataSpec(str(root), image_size=16))
    assert bundle.kind == "imagefolder"
    assert bundle.class_names == ["cat", "dog", "gray"]
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (3, 3, 16)
    assert (len(bundle.train), len(bundle.val)) == (7, 3)
    image, label = bundle.val[2]
    assert image.shape == (3, 16, 16) and label == 2  # grayscale PNG converted to RGB
    assert bundle.train[(0, 7)][0].shape == (3, 16, 16)


def test_default_sizes(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"a": 1, "b": 1}, {"a": 1, "b": 1})
    bundle = load_datasets(DataSpec(str(root)))
    assert bundle.image_size == 224 and bundle.val[0][0].shape == (3, 224, 224)


def test_empty_class_folder_is_allowed(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"a": 2, "b": 1, "c": 0}, {"a": 1, "b": 1, "c": 0})
    assert load_datasets(DataSpec(str(root), image_size=8)).num_classes == 3


def test_val_without_images(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"a": 2, "b": 1}, {"a": 0, "b": 0})
    with pytest.raises(SrqError, match=r"val has no images"):
        load_datasets(DataSpec(str(root)))


def test_missing_val(tmp_path: Path) -> None:
    write_images(tmp_path / "train" / "a", 1)
    write_images(tmp_path / "train" / "b", 1)
    with pytest.raises(SrqError, match=r"val is missing; expected .*/train/<class>/"):
        load_datasets(DataSpec(str(tmp_path)))


def test_split_without_class_folders(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a": 1, "b": 1}, {})
    (tmp_path / "val").mkdir()
    with pytest.raises(SrqError, match="val has no class folders"):
        load_datasets(DataSpec(str(tmp_path)))


def test_class_lists_must_match(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"a": 1, "b": 1}, {"a": 1, "c": 1})
    with pytest.raises(SrqError, match="only in train: b; only in val: c"):
        load_datasets(DataSpec(str(root)))


def test_single_class(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"a": 2}, {"a": 1})
    with pytest.raises(SrqError, match="only one class"):
        load_datasets(DataSpec(str(root)))


def test_resize_smaller_than_crop(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"a": 1, "b": 1}, {"a": 1, "b": 1})
    with pytest.raises(SrqError, match="resize size 20 is smaller than image size 32"):
        load_datasets(DataSpec(str(root), image_size=32, resize_size=20))


def test_nonexistent_source(tmp_path: Path) -> None:
    with pytest.raises(SrqError, match="does not exist"):
        load_datasets(DataSpec(str(tmp_path / "nope")))


def test_source_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"x")
    with pytest.raises(SrqError, match="is a file"):
        load_datasets(DataSpec(str(path)))


def test_unrecognized_directory(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    with pytest.raises(SrqError, match="neither an IDX dataset .* nor an ImageFolder dataset") as info:
        load_datasets(DataSpec(str(tmp_path)))
    assert "\n" not in str(info.value)


def damage(root: Path) -> dict[str, Path]:
    """Three kinds of unreadable file in train/a: garbage, a cut-off PNG, an empty .jpg."""
    folder = root / "train" / "a"
    bad = {"garbage": folder / "1.png", "truncated": folder / "2.png", "empty": folder / "3.jpg"}
    bad["garbage"].write_bytes(b"<html>404 Not Found</html>")
    data = bad["truncated"].read_bytes()
    bad["truncated"].write_bytes(data[: len(data) // 2])
    (folder / "3.png").unlink()
    bad["empty"].write_bytes(b"")
    return bad


def test_unreadable_images_are_replaced_by_the_next_readable(tmp_path: Path, caplog) -> None:
    root = make_tree(tmp_path, {"a": 4, "b": 3}, {"a": 1, "b": 1})
    bad = damage(root)  # train/a: 0.png ok, 1.png, 2.png, 3.jpg bad; then b/0.png ...
    bundle = load_datasets(DataSpec(str(root), image_size=8))
    dataset = bundle.train.base
    with caplog.at_level(logging.WARNING, logger="srqcli.data.imagefolder"):
        image, label = bundle.val[0]
        assert label == 0 and dataset.unreadable_count == 0  # val is a separate folder
        first_b = dataset.samples.index((str(root / "train" / "b" / "0.png"), 1))
        for index in (1, 2, 3):
            image, label = bundle.train[(index, 5)]  # the seeded augmentation of a replacement
            assert torch.equal(image, bundle.train[(first_b, 5)][0]) and label == 1
    assert dataset.unreadable_count == 3
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3 and all("\n" not in line for line in warned)
    for path in bad.values():
        assert any(str(path) in line for line in warned)
    assert "3 unreadable" in warned[-1]


def test_skipping_keeps_batches_deterministic_with_workers(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"a": 6, "b": 6}, {"a": 1, "b": 1})
    damage(root)

    def batches(workers: int) -> list[torch.Tensor]:
        bundle = load_datasets(DataSpec(str(root), image_size=8))
        train, _ = make_loaders(bundle, batch_size=4, workers=workers, seed=3)
        return [images for images, _ in train]

    single, parallel = batches(0), batches(2)
    assert len(single) == 3
    assert all(torch.equal(a, b) for a, b in zip(single, parallel))


@pytest.mark.parametrize("workers", [0, 1])
def test_strict_fails_with_one_line_naming_the_file(tmp_path: Path, workers: int) -> None:
    root = make_tree(tmp_path, {"a": 4, "b": 3}, {"a": 1, "b": 1})
    bad = damage(root)
    bundle = load_datasets(DataSpec(str(root), image_size=8, strict=True))
    train, _ = make_loaders(bundle, batch_size=7, workers=workers, seed=0)
    with pytest.raises(SrqError) as info:
        next(iter(train))
    message = str(info.value)
    assert message.startswith("unreadable image ") and "\n" not in message
    assert any(str(path) in message for path in bad.values())


def test_split_without_any_readable_image(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"a": 1, "b": 1}, {"a": 1, "b": 1})
    for path in (root / "val").rglob("*.png"):
        path.write_bytes(b"junk")
    bundle = load_datasets(DataSpec(str(root), image_size=8))
    with pytest.raises(SrqError, match="no readable image in .*val"):
        bundle.val[0]


def test_channels_1_loads_grayscale(tmp_path: Path) -> None:
    """--channels 1: RGB and grayscale PNGs alike become 1-channel tensors (PIL's luma)."""
    root = make_tree(tmp_path, {"cat": 2, "gray": 2}, {"cat": 1, "gray": 1})
    bundle = load_datasets(DataSpec(str(root), image_size=16, channels=1, mean=(0.0,), std=(1.0,)))
    assert bundle.in_channels == 1 and bundle.preprocessing.channels == 1
    rgb, _ = bundle.val[0]  # colour (0, 10, 200): luma = (0*299 + 10*587 + 200*114) / 1000
    assert rgb.shape == (1, 16, 16)
    assert torch.allclose(rgb, torch.full_like(rgb, round((10 * 587 + 200 * 114) / 1000) / 255))
    gray, _ = bundle.val[1]
    assert gray.shape == (1, 16, 16) and float(gray.max()) == 0.0  # the first gray PNG is black
    assert bundle.train[(0, 3)][0].shape == (1, 16, 16)


def test_mean_std_and_sizes_set_the_transform(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"a": 1, "b": 1}, {"a": 1, "b": 1})
    plain = load_datasets(DataSpec(str(root), image_size=8, resize_size=8, mean=(0, 0, 0), std=(1, 1, 1)))
    normed = load_datasets(DataSpec(str(root), image_size=8, resize_size=8, mean=(0.5, 0.25, 0.0),
                                    std=(0.5, 0.5, 2.0), interpolation="nearest"))
    x, y = plain.val[0][0], normed.val[0][0]
    expected = (x - torch.tensor([0.5, 0.25, 0.0])[:, None, None]) / torch.tensor([0.5, 0.5, 2.0])[:, None, None]
    assert torch.allclose(y, expected, atol=1e-6)  # a flat-colour image: the filter does not matter
    p = normed.preprocessing
    assert (p.image_size, p.resize_size, p.interpolation) == (8, 8, "nearest")
    assert normed.mean == (0.5, 0.25, 0.0) and normed.std == (0.5, 0.5, 2.0)
    assert p.describe() == ("resize 8 → center-crop 8, nearest, RGB, mean (0.5, 0.25, 0), "
                            "std (0.5, 0.5, 2)")


def test_defaults_are_imagenet_and_recorded(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"a": 1, "b": 1}, {"a": 1, "b": 1})
    p = load_datasets(DataSpec(str(root), image_size=32)).preprocessing
    assert (p.image_size, p.resize_size, p.channels, p.interpolation) == (32, 37, 3, "bilinear")
    assert p.mean == (0.485, 0.456, 0.406) and p.std == (0.229, 0.224, 0.225)
    gray = load_datasets(DataSpec(str(root), image_size=32, channels=1)).preprocessing
    assert gray.mean == (0.449,) and gray.std == (0.226,)


@pytest.mark.parametrize("spec,match", [
    (dict(mean=(0.5, 0.5)), r"^mean has 2 values; give one per channel"),
    (dict(std=(0.5,)), r"^std has 1 value but the images have 3 channels \(RGB\)"),
    (dict(channels=1, mean=(0.5, 0.5, 0.5)), r"^mean has 3 values but the images have 1 channel \(grayscale\)"),
    (dict(std=(0.5, -1.0, 0.5)), r"^std must be positive"),
    (dict(channels=4), r"^channels must be 1 \(grayscale\) or 3 \(RGB\), got 4$"),
    (dict(interpolation="area"), r"^interpolation must be one of bilinear, bicubic, nearest, got 'area'$"),
])
def test_bad_preprocessing_is_one_line(tmp_path: Path, spec: dict, match: str) -> None:
    root = make_tree(tmp_path, {"a": 1, "b": 1}, {"a": 1, "b": 1})
    with pytest.raises(SrqError, match=match) as info:
        load_datasets(DataSpec(str(root), **spec))
    assert "\n" not in str(info.value)


def test_preprocessing_is_refused_for_tensor_data() -> None:
    bundle = load_datasets(DataSpec("example", mean=(0.5,)))  # the example does not use it...
    assert bundle.preprocessing is None
    with pytest.raises(SrqError, match=r"^--mean, --std set how ImageFolder images are prepared, but the "
                                       r"example data is 1-channel tensors .*; drop them$"):
        bundle.refuse_preprocessing(["--mean", "--std"])  # ...so a user's flag is refused, not ignored
    bundle.refuse_preprocessing([])
