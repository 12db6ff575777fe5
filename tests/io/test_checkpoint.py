"""Tests for srqcli.io.checkpoint: safe loading of float weights from user files."""

from __future__ import annotations

import os
import pickle
import shlex
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from srqcli.errors import SrqError
from srqcli.io.checkpoint import load_into, read_state_dict

# Writing TorchScript fixtures uses APIs torch now marks deprecated; users still have such files.
TORCHSCRIPT_DEPRECATION = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning"
)


def tiny_model(in_channels: int = 3, num_classes: int = 2) -> nn.Sequential:
    """Small enough to build per test, but with a BatchNorm so buffers are covered too."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, num_classes),
    )


@pytest.fixture
def trained() -> nn.Sequential:
    """A model whose weights differ from a fresh ``tiny_model()`` so a load is observable."""
    model = tiny_model()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.add_(1)
    return model


def assert_same_weights(model: nn.Module, reference: nn.Module) -> None:
    expected = reference.state_dict()
    actual = model.state_dict()
    assert actual.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(actual[key], tensor), key


def load_error(path: Path, **kwargs: bool) -> str:
    """The SrqError message for ``path``, checked to be one line as the CLI requires."""
    with pytest.raises(SrqError) as info:
        read_state_dict(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- formats that load ------------------------------------------------------------------------


def test_state_dict_round_trip(tmp_path: Path, trained: nn.Sequential) -> None:
    path = tmp_path / "model.pt"
    torch.save(trained.state_dict(), path)
    model = load_into(tiny_model(), read_state_dict(path), arch="tiny")
    assert_same_weights(model, trained)
    assert not model.training


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model", "ema"])
def test_wrapped_state_dict(tmp_path: Path, trained: nn.Sequential, key: str) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({key: trained.state_dict(), "epoch": 7, "optimizer": {"lr": 0.1}}, path)
    assert_same_weights(load_into(tiny_model(), read_state_dict(path), arch="tiny"), trained)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefixes_are_stripped(tmp_path: Path, trained: nn.Sequential, prefix: str) -> None:
    path = tmp_path / "ddp.pt"
    torch.save({"state_dict": {prefix + k: v for k, v in trained.state_dict().items()}}, path)
    weights = read_state_dict(path)
    assert set(weights) == set(trained.state_dict())
    assert_same_weights(load_into(tiny_model(), weights, arch="tiny"), trained)


def test_prefix_on_only_some_keys_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pt"
    torch.save({"module.a": torch.zeros(1), "b": torch.zeros(1)}, path)
    assert set(read_state_dict(path)) == {"module.a", "b"}


def test_safetensors_round_trip(tmp_path: Path, trained: nn.Sequential) -> None:
    path = tmp_path / "model.safetensors"
    save_file(trained.state_dict(), str(path))
    assert_same_weights(load_into(tiny_model(), read_state_dict(path), arch="tiny"), trained)


@TORCHSCRIPT_DEPRECATION
def test_torchscript_round_trip(tmp_path: Path, trained: nn.Sequential) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(trained), str(path))
    weights = read_state_dict(path)
    assert isinstance(weights, dict)
    assert_same_weights(load_into(tiny_model(), weights, arch="tiny"), trained)


def test_half_precision_is_cast_to_model_dtype(tmp_path: Path, trained: nn.Sequential) -> None:
    path = tmp_path / "half.pt"
    torch.save(trained.half().state_dict(), path)
    model = load_into(tiny_model(), read_state_dict(path), arch="tiny")
    assert model[0].weight.dtype == torch.float32
    assert model[1].num_batches_tracked.dtype == torch.int64


def test_missing_num_batches_tracked_is_tolerated(trained: nn.Sequential) -> None:
    weights = trained.state_dict()
    old_style = {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")}
    model = load_into(tiny_model(), old_style, arch="tiny")
    assert torch.equal(model[0].weight, trained[0].weight)


# --- pickled Python objects -------------------------------------------------------------------


def test_whole_module_needs_trust(tmp_path: Path, trained: nn.Sequential) -> None:
    path = tmp_path / "whole.pt"
    torch.save(trained, path)
    assert "--trust-pickle" in load_error(path)

    loaded = read_state_dict(path, trust_pickle=True)
    assert isinstance(loaded, nn.Module)
    assert_same_weights(load_into(tiny_model(), loaded, arch="tiny"), trained)


def test_wrapped_whole_module_with_trust(tmp_path: Path, trained: nn.Sequential) -> None:
    path = tmp_path / "wrapped_whole.pt"
    torch.save({"model": trained, "epoch": 3}, path)
    assert "--trust-pickle" in load_error(path)
    assert isinstance(read_state_dict(path, trust_pickle=True), nn.Module)


def test_trusted_pickle_that_cannot_be_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    # Protocol-2 pickle of an instance of ``no_such_module.Net``, as a file written by
    # someone else's training code would reference classes that are not installed here.
    path.write_bytes(b"\x80\x02cno_such_module\nNet\n)\x81.")
    assert "--trust-pickle" in load_error(path)
    message = load_error(path, trust_pickle=True)
    assert "not a readable PyTorch checkpoint" in message and "no_such_module" in message


class _RunsCode:
    """A pickle payload that runs a shell command when unpickled."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_does_not_run_without_trust(tmp_path: Path, writer: str) -> None:
    sentinel = tmp_path / "SENTINEL"
    payload = {"state_dict": _RunsCode(f"touch {shlex.quote(str(sentinel))}")}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with path.open("wb") as handle:
            pickle.dump(payload, handle)

    assert "--trust-pickle" in load_error(path)
    assert not sentinel.exists()


# --- unreadable files -------------------------------------------------------------------------


def test_truncated_pt(tmp_path: Path, trained: nn.Sequential) -> None:
    path = tmp_path / "model.pt"
    torch.save(trained.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = load_error(path)
    assert message == (f"{path} is cut short or damaged: it starts as a zip archive (the container of "
                       "torch.save, TorchScript and torch.export) but its end is missing; copy or save it again")


def test_truncated_legacy_pickle(tmp_path: Path, trained: nn.Sequential) -> None:
    """Cut short, torch.save's legacy format is not mistaken for pickled objects (--trust-pickle)."""
    path = tmp_path / "model.pt"
    torch.save(trained.state_dict(), path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:300])
    for trust in (False, True):
        assert "is cut short or damaged: it starts as a pickle" in load_error(path, trust_pickle=trust)


@pytest.mark.parametrize("trust_pickle", [False, True])
def test_random_bytes(tmp_path: Path, trust_pickle: bool) -> None:
    path = tmp_path / "random.bin"
    generator = torch.Generator().manual_seed(1)
    data = torch.randint(0, 256, (4096,), generator=generator, dtype=torch.uint8)
    path.write_bytes(b"\x00" + data.numpy().tobytes())  # \x00 is never a pickle PROTO opcode
    start = " ".join(f"{b:02x}" for b in path.read_bytes()[:8])
    assert load_error(path, trust_pickle=trust_pickle) == (
        f"{path} is not a PyTorch, safetensors or TorchScript file (it starts with bytes {start})")


@pytest.mark.parametrize("name,start,what", [
    ("model.h5", b"\x89HDF\r\n\x1a\n", "an HDF5 file"), ("model.pt.gz", b"\x1f\x8b\x08", "a gzip archive"),
    ("model.onnx", b"\x08\x07\x12", "an ONNX model"),
])
def test_other_formats_are_named(tmp_path: Path, name: str, start: bytes, what: str) -> None:
    path = tmp_path / name
    path.write_bytes(start + bytes(64))
    assert load_error(path).startswith(f"{path} is {what}")


def test_safetensors_content_is_read_whatever_the_suffix(tmp_path: Path, trained: nn.Sequential) -> None:
    path = tmp_path / "model.pt"
    save_file(trained.state_dict(), str(path))
    assert read_state_dict(path).keys() == trained.state_dict().keys()


def test_zip_with_a_damaged_member_name(tmp_path: Path, trained: nn.Sequential) -> None:
    # A flipped bit in a name flagged UTF-8 makes zipfile raise UnicodeDecodeError.
    path = tmp_path / "flipped.pt"
    torch.save(trained.state_dict(), path)
    data = bytearray(path.read_bytes())
    name = data.rindex(b"flipped/data.pkl")  # the central directory entry
    data[name] = 0xCA
    path.write_bytes(bytes(data))
    assert "flipped.pt is a zip archive but not an intact PyTorch" in load_error(path)


@TORCHSCRIPT_DEPRECATION
def test_truncated_torchscript(tmp_path: Path, trained: nn.Sequential) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(trained), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "is cut short or damaged: it starts as a zip archive" in load_error(path)


@pytest.mark.parametrize("keep", [0.5, 4 / 1000])
def test_truncated_safetensors(tmp_path: Path, trained: nn.Sequential, keep: float) -> None:
    path = tmp_path / "model.safetensors"
    save_file(trained.state_dict(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    assert "not a valid safetensors file" in load_error(path)


@pytest.mark.parametrize("name", ["empty.pt", "empty.safetensors"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.touch()
    assert "empty" in load_error(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    assert load_error(path) == f"checkpoint not found: {path}"


def test_directory(tmp_path: Path) -> None:
    assert "not a file" in load_error(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        torch.zeros(3),
        [torch.zeros(3)],
        {},
        {"epoch": 3},
        {"weight": torch.zeros(3), "step": 10},
        {"state_dict": {"weight": torch.zeros(3), "step": 10}},
    ],
    ids=["tensor", "list", "empty", "no-tensors", "non-tensor-in-sd", "non-tensor-in-wrapped"],
)
def test_not_a_state_dict(tmp_path: Path, content: object) -> None:
    path = tmp_path / "odd.pt"
    torch.save(content, path)
    assert load_error(path) == f"{path} does not contain a state_dict"


# --- architecture mismatches ------------------------------------------------------------------


def fit_error(model: nn.Module, weights: dict[str, torch.Tensor]) -> str:
    with pytest.raises(SrqError) as info:
        load_into(model, weights, arch="tiny")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("checkpoint does not fit tiny: ")
    assert message.endswith("; check the architecture, --num-classes and the input channels")
    return message


def test_shape_mismatch_names_key_and_shapes(trained: nn.Sequential) -> None:
    message = fit_error(tiny_model(in_channels=1), trained.state_dict())
    assert "1 shape mismatch (0.weight: checkpoint [4, 3, 3, 3] vs model [4, 1, 3, 3])" in message
    assert "missing" not in message and "unexpected" not in message


def test_missing_and_unexpected_keys(trained: nn.Sequential) -> None:
    weights = trained.state_dict()
    weights["head.weight"] = weights.pop("4.weight")
    del weights["4.bias"]
    message = fit_error(tiny_model(), weights)
    assert "2 missing keys (4.weight, 4.bias)" in message
    assert "1 unexpected (head.weight)" in message


def test_long_key_lists_are_cut(trained: nn.Sequential) -> None:
    weights = {f"extra{i}": torch.zeros(1) for i in range(5)}
    message = fit_error(tiny_model(), {**trained.state_dict(), **weights})
    assert "5 unexpected (extra0, extra1, extra2, …)" in message


def test_wrong_num_classes(tmp_path: Path, trained: nn.Sequential) -> None:
    path = tmp_path / "model.pt"
    torch.save(trained.state_dict(), path)
    message = fit_error(tiny_model(num_classes=10), read_state_dict(path))
    expected = "2 shape mismatches (4.weight: checkpoint [2, 144] vs model [10, 144], 4.bias:"
    assert expected in message


def test_failed_fit_leaves_model_untouched(trained: nn.Sequential) -> None:
    model = tiny_model(num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit_error(model, trained.state_dict())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
