"""srq model files whose metadata was damaged or edited: one clear line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report.report_testutil import save_lenet_run
from safetensors import safe_open
from safetensors.torch import save_file

from srqcli.core.encoding import layers_from_dict
from srqcli.errors import SrqError
from srqcli.io.quantized import load_model, read_model_info, save_model
from srqcli.nn.encodings import model_encodings


PREPROCESSING = ('{"image_size": 28, "resize_size": 32, "mean": [0.5], "std": [0.25], "channels": 1, '
                 '"interpolation": "bicubic"}')


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    return save_lenet_run(tmp_path_factory.mktemp("run"))


def with_metadata(original: Path, target: Path, **changes: str) -> Path:
    with safe_open(str(original), framework="pt") as f:
        meta = {**f.metadata(), **changes}
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    save_file(tensors, str(target), metadata=meta)
    return target


@pytest.mark.parametrize("changes,detail", [
    ({"format_version": "one"}, "format_version = 'one'"),
    ({"image_size": "0"}, "image_size = 0"),
    ({"in_channels": "-3"}, "in_channels = -3"),
    ({"num_classes": "ten"}, "ValueError"),
    ({"normalization": "[]"}, "AttributeError"),
    ({"plan": "[1]"}, "TypeError"),
    ({"recipe": "7"}, "recipe: a recipe must be a table of settings"),
    ({"recipe": '{"quant": {"weight_bits": 99}}'}, "recipe: quant.weight_bits must be between"),
    ({"preprocessing": "{]"}, "preprocessing: "),
    ({"preprocessing": '{"image_size": 28}'}, "preprocessing: preprocessing must be an object with the keys"),
    ({"preprocessing": PREPROCESSING.replace('"channels": 1', '"channels": 2')},
     "preprocessing: channels must be 1 (grayscale) or 3 (RGB), got 2"),
    ({"encodings": "[]"}, "encodings: the encodings must be an object of layers"),
    ({"encodings": '{"fc1": {"weight": {"bits": 4}}}'}, "encodings: layer fc1: expected the records"),
])
def test_damaged_metadata_is_named(original: Path, tmp_path: Path, changes: dict, detail: str) -> None:
    path = with_metadata(original, tmp_path / "model.safetensors", **changes)
    for load in (read_model_info, load_model):
        with pytest.raises(SrqError) as info:
            load(path)
        message = str(info.value)
        assert message.startswith(f"{path} has damaged srq metadata (") and detail in message
        assert "\n" not in message


def test_newer_format_asks_for_an_upgrade(original: Path, tmp_path: Path) -> None:
    path = with_metadata(original, tmp_path / "model.safetensors", format_version="99")
    with pytest.raises(SrqError, match="written by a newer srq .*upgrade srq"):
        read_model_info(path)


@pytest.mark.parametrize("size,detail", [
    ("2", "cannot run on 1×2×2 inputs"),  # smaller than LeNet-5's 5×5 kernels
    ("100000", "outside 1..4096"),  # would allocate a gigantic probe image
])
def test_input_size_the_model_cannot_take_is_damage(original: Path, tmp_path: Path, size: str,
                                                    detail: str) -> None:
    path = with_metadata(original, tmp_path / "model.safetensors", image_size=size)
    with pytest.raises(SrqError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path} has damaged srq metadata (image_size: ") and detail in message
    assert "\n" not in message


def test_the_same_model_saved_twice_is_the_same_bytes(original: Path, tmp_path: Path) -> None:
    """safetensors writes metadata in a random order per save; srq's files must hash the same."""
    model, info = load_model(original)
    copies = [tmp_path / f"{i}.safetensors" for i in range(5)]
    for copy in copies:
        save_model(copy, model, info)
    assert len({copy.read_bytes() for copy in copies}) == 1
    with safe_open(str(copies[0]), framework="pt") as f:
        assert list(f.metadata()) and read_model_info(copies[0]) == info  # still reads back


def test_preprocessing_round_trips_and_older_files_have_none(original: Path, tmp_path: Path) -> None:
    """Files written before srq saved the preprocessing read as before: eval falls back to their
    input size and the recipe's resize size (the rest were the defaults)."""
    old = read_model_info(original)
    assert old.preprocessing is None
    assert old.data_settings() == {"image_size": 28, "resize_size": None}
    path = with_metadata(original, tmp_path / "model.safetensors", preprocessing=PREPROCESSING)
    info = read_model_info(path)
    p = info.preprocessing
    assert (p.image_size, p.resize_size, p.mean, p.std, p.channels, p.interpolation) == (
        28, 32, (0.5,), (0.25,), 1, "bicubic")
    assert info.data_settings() == p.to_dict() | {"mean": (0.5,), "std": (0.25,)}
    again = tmp_path / "again.safetensors"
    save_model(again, load_model(path)[0], info)
    assert read_model_info(again).preprocessing == p


def test_quantizer_records_are_stored_and_checked(original: Path, tmp_path: Path) -> None:
    """The file's records are its quantizers' (read without rebuilding them); records that
    disagree with the tensors are damage, and files written before srq stored them still load."""
    model, info = load_model(original)
    assert info.encodings == model_encodings(model) and list(info.encodings) == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert read_model_info(original).encodings == info.encodings
    with safe_open(str(original), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    records = json.loads(meta["encodings"])
    records["fc2"]["input"]["step"] *= 2
    edited = with_metadata(original, tmp_path / "edited.safetensors", encodings=json.dumps(records))
    assert read_model_info(edited).encodings["fc2"] == layers_from_dict(records)["fc2"]
    with pytest.raises(SrqError, match="damaged srq metadata \\(encodings: layer fc2 does not match"):
        load_model(edited)
    del meta["encodings"]
    older = tmp_path / "older.safetensors"
    save_file(tensors, str(older), metadata=meta)
    assert read_model_info(older).encodings is None
    assert load_model(older)[1].encodings is None
