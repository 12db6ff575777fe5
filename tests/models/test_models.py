"""Model zoo: output shapes, channel adaptation, naming and error messages."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from srqcli.errors import SrqError
from srqcli.models import build_model, default_input_size, list_architectures

BUILTINS = ["lenet5", "resnet20", "resnet32", "resnet44", "resnet56"]


@pytest.mark.parametrize("arch", BUILTINS)
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32])
def test_builtin_output_shape(arch: str, in_channels: int, size: int) -> None:
    model = build_model(arch, num_classes=10, in_channels=in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 10)


def test_lenet_accepts_16x16() -> None:
    assert build_model("lenet5", 5, 1).eval()(torch.randn(1, 1, 16, 16)).shape == (1, 5)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_torchvision_grayscale_custom_classes(arch: str) -> None:
    model = build_model(arch, num_classes=7, in_channels=1).eval()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 7)


def test_torchvision_three_channels_is_untouched() -> None:
    model = build_model("resnet18", num_classes=4)
    assert model.conv1.in_channels == 3 and model.fc.out_features == 4


def test_first_conv_keeps_its_configuration() -> None:
    conv = build_model("resnet18", num_classes=4, in_channels=2).conv1
    assert (conv.in_channels, conv.out_channels) == (2, 64)
    assert conv.kernel_size == (7, 7) and conv.stride == (2, 2) and conv.padding == (3, 3)
    assert conv.bias is None


def test_relus_are_separate_modules() -> None:
    lenet = build_model("lenet5", 10, 1)
    names = dict(lenet.named_modules())
    for name in ["conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "fc1", "fc2", "fc3"]:
        assert name in names
    resnet = build_model("resnet20", 10)
    relus = [m for m in resnet.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == len({id(m) for m in relus}) == 1 + 9 * 2


def test_resnet20_parameter_count() -> None:
    count = sum(p.numel() for p in build_model("resnet20", 10).parameters())
    assert count == 272_474
    assert 260_000 <= count <= 280_000


def test_resnet_shortcut_only_where_shape_changes() -> None:
    model = build_model("resnet20", 10)
    assert isinstance(model.layer1[0].shortcut, nn.Identity)
    assert isinstance(model.layer2[0].shortcut, nn.Sequential)
    assert isinstance(model.layer2[1].shortcut, nn.Identity)


def test_unknown_arch_suggests_close_match() -> None:
    with pytest.raises(SrqError, match="did you mean.*resnet20") as info:
        build_model("resnet2O", 10)
    assert "\n" not in str(info.value)


def test_unknown_arch_without_close_match() -> None:
    with pytest.raises(SrqError, match="unknown architecture 'zzz'"):
        build_model("zzz", 10)


def test_arch_name_is_case_insensitive() -> None:
    assert isinstance(build_model("LeNet5", 10, 1), nn.Module)


def test_list_architectures() -> None:
    archs = list_architectures()
    assert archs[:5] == BUILTINS
    assert "resnet18" in archs and "mobilenet_v2" in archs
    assert len(archs) == len(set(archs))


def test_default_input_size() -> None:
    assert default_input_size("resnet20") == 32
    assert default_input_size("lenet5") == 32
    assert default_input_size("resnet18") == 224
    with pytest.raises(SrqError):
        default_input_size("nope")
