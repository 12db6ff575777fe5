"""Finding a state_dict's architecture from its tensor names and shapes (srqcli/models/infer.py)."""

from __future__ import annotations

import pytest
import torch

import srqcli.models.infer as infer
from srqcli.errors import SrqError
from srqcli.models import build_model
from srqcli.models.infer import ArchMatch, infer_architecture


@pytest.mark.parametrize("arch,classes,channels", [
    ("resnet18", 10, 3), ("mobilenet_v2", 10, 3), ("efficientnet_b0", 10, 3),
    ("resnet50", 5, 1), ("lenet5", 10, 1), ("resnet20", 7, 3),
    # RegNets read their widths back from tensors: built with only their weights on meta
    ("regnet_x_400mf", 10, 3), ("regnet_y_400mf", 10, 1),
])
def test_torchvision_and_builtin_state_dicts_are_recognised(arch, classes, channels):
    state = build_model(arch, classes, channels).state_dict()
    assert infer_architecture(state) == ArchMatch(arch, classes, channels)


def test_older_checkpoints_without_num_batches_tracked_match():
    state = {k: v for k, v in build_model("resnet18", 10, 3).state_dict().items()
             if not k.endswith("num_batches_tracked")}
    assert infer_architecture(state).arch == "resnet18"


def test_no_match_names_the_nearest_and_asks_for_arch():
    state = build_model("resnet18", 10, 3).state_dict()
    state.pop("fc.bias")
    with pytest.raises(SrqError, match=r"matches no .* \(nearest: resnet18 \(99% .*pass --arch NAME"):
        infer_architecture(state)


@pytest.mark.parametrize("model", [
    torch.nn.LSTM(16, 32, num_layers=2),
    torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(32, 4, 64), 1, enable_nested_tensor=False),
    torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3)),
], ids=["lstm", "transformer", "mlp"])
def test_a_non_vision_state_dict_is_refused(model):
    with pytest.raises(SrqError, match=r"matches no built-in or torchvision classifier: it has no "
                                       r"convolution weights .*; pass --arch NAME, or the model's class"):
        infer_architecture(model.state_dict())


def test_several_matches_are_listed(monkeypatch):
    """Two names for one network (as a registry could hold) cannot be told apart."""
    real_build = infer.build_model
    monkeypatch.setattr(infer, "list_architectures", lambda: ["lenet5", "lenet5_copy", "resnet20"])
    monkeypatch.setattr(infer, "build_model", lambda a, c, i: real_build(a.replace("_copy", ""), c, i))
    infer._key_sets.cache_clear()
    try:
        with pytest.raises(SrqError, match=r"several architectures \(lenet5, lenet5_copy\); pass --arch NAME"):
            infer_architecture(build_model("lenet5", 10, 1).state_dict())
    finally:
        infer._key_sets.cache_clear()
