"""``srq quantize MODEL`` with the model as the user has it (issue #14), through the real CLI on
the built-in digits data: a RegNet state_dict, a torch.export program, the user's own code,
a traced TorchScript file; and srq's one-line errors for files and code it cannot use."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import srqcli.models.user as user
from srqcli.cli import app
from srqcli.models import build_model

runner = CliRunner()


def one_line_error(res) -> str:
    """The CLI's error: exit code 2, one line, last on stderr (after the job's notes), no
    traceback."""
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and "Traceback" not in res.stderr, res.stderr
    return errors[0][len("error: "):]


def json_out(res) -> dict:
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout[res.stdout.index("{"):])


# --- files ---------------------------------------------------------------------------------


@pytest.mark.slow  # the first inference of a process builds every candidate once (~6 s idle)
def test_a_regnet_state_dict_is_recognised_without_arch(tmp_path):
    """RegNets compute their widths from tensor values, which a meta-device build cannot: they
    needed --arch before."""
    torch.manual_seed(0)
    weights = tmp_path / "regnet.pt"
    torch.save(build_model("regnet_x_400mf", 10, 1).state_dict(), weights)
    res = runner.invoke(app, ["eval", str(weights), "--data", "example", "--json"])
    assert json_out(res)["images"] == 360
    assert f"model: {weights} is a state_dict of regnet_x_400mf (10 classes, 1 input channels)" in res.stderr


class _Custom(nn.Module):
    """No built-in or torchvision architecture has these names."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.stem(x).mean((2, 3)))


def _export(model: nn.Module, path: Path) -> Path:
    program = torch.export.export(model.eval(), (torch.randn(1, 1, 28, 28),))
    torch.export.save(program, str(path))
    return path


@pytest.mark.usefixtures("eager_srq")
def test_a_torch_export_program_is_quantized_from_its_weights(tmp_path):
    """An exported graph has no nn.Conv2d/nn.Linear modules for srq's quantizers; its weights
    keep their module names, so srq rebuilds the architecture they belong to."""
    torch.manual_seed(0)
    lenet = build_model("lenet5", 10, 1)
    program = _export(lenet, tmp_path / "lenet.pt2")
    out = tmp_path / "run"
    res = runner.invoke(app, ["quantize", str(program), "--data", "example", "--epochs", "0",
                              "--no-dropbits", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (f"model: {program} is a torch.export program of lenet5 (10 classes, 1 input channels), "
            "found by its tensor names and shapes; srq rebuilds lenet5 with its weights") in res.stderr
    assert (out / "model.safetensors").is_file()

    custom = _export(_Custom(), tmp_path / "custom.pt2")
    message = one_line_error(runner.invoke(app, ["quantize", str(custom), "--data", "example",
                                                 "--out", str(tmp_path / "no")]))
    assert message.startswith(f"{custom} is a torch.export program, whose graph srq cannot quantize "
                              "(it has no nn.Conv2d/nn.Linear modules left)")
    assert message.endswith("pass --arch NAME, or the model's class as package.module:Class")
    assert not (tmp_path / "no").exists()


def _random_bytes(path: Path) -> Path:
    data = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    path.write_bytes(b"\x00" + data.numpy().tobytes())  # \x00: never a zip, pickle or safetensors start
    return path


def _truncated(path: Path) -> Path:
    torch.save(build_model("lenet5", 10, 1).state_dict(), path)
    path.write_bytes(path.read_bytes()[:20_000])
    return path


@pytest.mark.parametrize("write,expected", [
    (_random_bytes, "{file} is not a PyTorch, safetensors or TorchScript file (it starts with bytes "
                    "00 {start})"),
    (_truncated, "{file} is cut short or damaged: it starts as a zip archive (the container of "
                 "torch.save, TorchScript and torch.export) but its end is missing; copy or save it again"),
], ids=["random-bytes", "truncated"])
def test_an_unreadable_file_gets_srqs_own_diagnosis(tmp_path, write, expected):
    """Not torch's text (weights_only, miniz) cut at a length, but what the file is."""
    file = write(tmp_path / "model.pt")
    start = " ".join(f"{b:02x}" for b in file.read_bytes()[1:8])
    for command in (["quantize", str(file), "--out", str(tmp_path / "run")], ["eval", str(file)]):
        message = one_line_error(runner.invoke(app, [*command, "--data", "example"]))
        assert message == expected.format(file=file, start=start)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model", [
    nn.LSTM(16, 32, num_layers=2),
    nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)),
], ids=["lstm", "mlp"])
def test_a_non_vision_state_dict_matches_no_architecture(tmp_path, model):
    weights = tmp_path / "model.pt"
    torch.save(model.state_dict(), weights)
    message = one_line_error(runner.invoke(app, ["quantize", str(weights), "--data", "example",
                                                 "--out", str(tmp_path / "run")]))
    assert message.startswith("the state_dict (")
    assert ("matches no built-in or torchvision classifier: it has no convolution weights (a text or "
            "tabular model?); pass --arch NAME, or the model's class as package.module:Class") in message
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("eager_srq")
@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")
def test_a_traced_torchvision_model_is_quantized_exported_and_evaluated(tmp_path):
    """TorchScript from torch.jit.trace (not only torch.jit.script) of resnet18 with 10 classes."""
    torch.manual_seed(0)
    traced = torch.jit.trace(build_model("resnet18", 10, 1).eval(), torch.randn(1, 1, 28, 28))
    file = tmp_path / "resnet18.ts.pt"
    torch.jit.save(traced, str(file))
    out = tmp_path / "run"
    res = runner.invoke(app, ["quantize", str(file), "--data", "example", "--epochs", "0",
                              "--no-dropbits", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"model: {file} is a TorchScript model of resnet18 (10 classes, 1 input channels)" in res.stderr
    res = runner.invoke(app, ["export", str(out), "--format", "onnx", "--batches", "1"])
    assert res.exit_code == 0, res.output
    assert (out / "model.onnx").is_file()
    quantized = json.loads((out / "metrics.json").read_text())["quantized"]
    assert json_out(runner.invoke(app, ["eval", str(out), "--json", "-q"]))["top1"] == pytest.approx(
        quantized["top1"], abs=1e-9)
    assert json_out(runner.invoke(app, ["eval", str(out / "model.onnx"), "--json", "-q"]))["images"] == 360


# --- the user's code -----------------------------------------------------------------------

PACKAGE = "srq_user_models"
NETS = '''
import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self, num_classes=7, in_channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


class GeluCNN(TinyCNN):
    """TinyCNN with a GELU, which srq trains but its ONNX export does not write."""

    def __init__(self, num_classes=7, in_channels=3):
        super().__init__(num_classes, in_channels)
        self.act = nn.GELU()

    def forward(self, x):
        x = self.act(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def not_a_model():
    return 42


def needs_width(width):
    return TinyCNN()
'''


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """A package of the user's on sys.path; nothing imported from it or named before."""
    package = tmp_path / "code" / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(textwrap.dedent(NETS))
    (package / "broken.py").write_text("raise RuntimeError('needs a GPU cluster')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    monkeypatch.setattr(user, "_named", {})
    yield package
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]


@pytest.mark.usefixtures("eager_srq")
def test_the_users_own_model_class_is_quantized_end_to_end(tmp_path, user_package, monkeypatch):
    """MODEL package.module:Class imports the user's code (one line says so) and builds the model
    with the data's classes and channels; a run made so is rebuilt only with the path named again."""
    spec = f"{PACKAGE}.nets:TinyCNN"
    nets = importlib.import_module(f"{PACKAGE}.nets")  # the user's own training saved its weights
    torch.manual_seed(0)
    torch.save(nets.TinyCNN(num_classes=10, in_channels=1).state_dict(), tmp_path / "tiny.pt")
    out = tmp_path / "run"
    res = runner.invoke(app, ["quantize", spec, "-c", str(tmp_path / "tiny.pt"), "--data", "example",
                              "--epochs", "1", "--no-dropbits", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"model: imported user code {spec} (its module ran as Python code)" in res.stderr
    plan = json.loads((out / "metrics.json").read_text())["plan"]
    assert [p["name"] for p in plan] == ["conv1", "conv2", "fc"]

    monkeypatch.setattr(user, "_named", {})  # a new process: nothing named yet
    message = one_line_error(runner.invoke(app, ["eval", str(out), "--json"]))
    assert message == (f"the model is built by user code ({spec}), which srq imports only when it is "
                       f"named on the command line: name it again (--arch {spec}, or as MODEL)")
    res = runner.invoke(app, ["eval", str(out), "--arch", spec, "--json"])
    assert json_out(res)["images"] == 360 and f"imported user code {spec}" in res.stderr
    res = runner.invoke(app, ["export", str(out), "--arch", spec, "--batches", "1"])
    assert res.exit_code == 0 and (out / "model.onnx").is_file(), res.output


@pytest.mark.usefixtures("eager_srq")
def test_a_model_with_an_op_export_cannot_write_names_it_in_one_line(tmp_path, user_package):
    """srq trains a model with a GELU; its deployed accuracy is n/a with the reason, and
    srq export fails in one line naming the node, writing nothing."""
    spec = f"{PACKAGE}.nets:GeluCNN"
    out = tmp_path / "run"
    res = runner.invoke(app, ["quantize", spec, "--pretrain-epochs", "1", "--epochs", "1", "--no-dropbits",
                              "--data", "example", "--out", str(out)])
    assert res.exit_code == 0, res.output
    reason = "cannot export module act (GELU): not supported by srq's ONNX export"
    assert json.loads((out / "metrics.json").read_text())["undeployable"] == reason
    res = runner.invoke(app, ["export", str(out), "--arch", spec, "--batches", "1"])
    assert one_line_error(res) == reason
    assert not (out / "model.onnx").exists() and not list(out.glob("*.tmp*"))


@pytest.mark.parametrize("spec,expected", [
    (f"{PACKAGE}.missing:TinyCNN", f"cannot import {PACKAGE}.missing (MODEL {PACKAGE}.missing:TinyCNN): "
                                   f"No module named '{PACKAGE}.missing'; run srq from the folder that "
                                   "holds it, or add that folder to PYTHONPATH"),
    (f"{PACKAGE}.broken:Net", f"importing {PACKAGE}.broken (MODEL {PACKAGE}.broken:Net) failed: "
                              "RuntimeError: needs a GPU cluster"),
    (f"{PACKAGE}.nets:TinyCN", f"{PACKAGE}.nets has no TinyCN (MODEL {PACKAGE}.nets:TinyCN); did you "
                               "mean TinyCNN?"),
    (f"{PACKAGE}.nets:not_a_model", f"{PACKAGE}.nets:not_a_model() returned a value of type int, "
                                    "not a torch nn.Module: MODEL must name a class or function that builds the model"),
    (f"{PACKAGE}.nets:needs_width", f"{PACKAGE}.nets:needs_width() failed: TypeError: needs_width() "
                                    "missing 1 required positional argument: 'width' (srq passes no "
                                    "other arguments)"),
], ids=["no-module", "module-fails", "no-attribute", "not-a-module", "needs-arguments"])
def test_user_code_that_gives_no_model_is_a_one_line_error(tmp_path, user_package, spec, expected):
    out = tmp_path / "run"
    res = runner.invoke(app, ["quantize", spec, "--pretrain-epochs", "1", "--data", "example",
                              "--out", str(out)])
    assert one_line_error(res) == expected
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18", "efficientnet_b0"])
def test_a_torchvision_state_dict_is_recognised_through_the_cli(arch, tmp_path):
    """Issue #14: ``srq eval model.pt`` on small real data (digit PNGs) finds the torchvision
    architecture of a 10-class state_dict without --arch, says so in one line and evaluates it."""
    from PIL import Image
    from torchvision import models as tv

    from srqcli.data.example import _digits

    images, labels = _digits(32)
    root = tmp_path / "digits"
    for split, rows in (("train", range(20)), ("val", range(20, 40))):
        for i in rows:
            folder = root / split / str(int(labels[i]))
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (images[i, 0] * 255).round().to(torch.uint8).numpy()
            Image.fromarray(pixels, mode="L").convert("RGB").save(folder / f"{i}.png")
    weights = tmp_path / "model.pt"
    torch.save(getattr(tv, arch)(num_classes=10).state_dict(), weights)
    res = runner.invoke(app, ["eval", str(weights), "--data", str(root), "--image-size", "32",
                              "--resize-size", "32", "--json"])
    assert res.exit_code == 0, res.output
    assert f"is a state_dict of {arch} (10 classes" in res.output
    assert json.loads(res.stdout)["images"] == 20
