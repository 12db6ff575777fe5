"""Model zoo: srq's built-in CIFAR/MNIST-sized nets, every torchvision classifier, and the
user's own code named by its import path (:mod:`srqcli.models.user`).

Models are always built from scratch (``weights=None``): srq runs offline, so nothing may be
downloaded; users who want pretrained weights load a checkpoint afterwards.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
import torchvision
from torch import nn

from srqcli.errors import SrqError, short_reason
from srqcli.models.lenet import LeNet5
from srqcli.models.resnet_cifar import (
    CifarResNet,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
)
from srqcli.models.user import build_user_model, is_import_path

__all__ = [
    "CifarResNet",
    "LeNet5",
    "build_model",
    "canonical_arch",
    "check_input_size",
    "default_input_size",
    "list_architectures",
]

_BUILTIN: dict[str, Callable[..., nn.Module]] = {
    "lenet5": LeNet5,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
}

# GoogLeNet and Inception-v3 default to auxiliary heads that make a train-mode forward return
# a namedtuple instead of logits; the training loop expects plain logits, so turn them off.
# ``init_weights=True`` is what torchvision does anyway, but passing it silences its warning.
_TORCHVISION_KWARGS: dict[str, dict[str, bool]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def _torchvision_names() -> list[str]:
    # ``module=torchvision.models`` restricts the registry to image classifiers (no detection,
    # segmentation, video or pre-quantized variants).
    return torchvision.models.list_models(module=torchvision.models)


def list_architectures() -> list[str]:
    """All names :func:`build_model` accepts: built-ins first, then torchvision's, sorted."""
    return list(_BUILTIN) + sorted(_torchvision_names())


def _check_known(arch: str) -> str:
    name = arch.strip().lower()
    if name in _BUILTIN or name in _torchvision_names():
        return name
    close = difflib.get_close_matches(name, list_architectures(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise SrqError(
        f"unknown architecture {arch!r}; {hint}"
        "use lenet5, resnet20/32/44/56 or a torchvision classifier name such as resnet18"
    )


def canonical_arch(arch: str) -> str:
    """``arch`` as srq compares it: names in lower case, an import path as typed (Python's
    names are case-sensitive)."""
    return arch.strip() if is_import_path(arch) else arch.strip().lower()


def build_model(arch: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build ``arch`` with randomly initialised weights for ``num_classes`` outputs.

    Torchvision models are built unmodified except, when ``in_channels != 3``, for their first
    ``Conv2d``, which is replaced by an identically configured conv with ``in_channels`` inputs
    so that e.g. grayscale data can be fed to an ImageNet architecture. An import path is the
    user's factory, called as :func:`srqcli.models.user.build_user_model` says.
    """
    if is_import_path(arch):
        return build_user_model(arch, num_classes, in_channels)
    name = _check_known(arch)
    if name in _BUILTIN:
        return _BUILTIN[name](num_classes=num_classes, in_channels=in_channels)
    model = torchvision.models.get_model(
        name, weights=None, num_classes=num_classes, **_TORCHVISION_KWARGS.get(name, {})
    )
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    return model


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swap the first ``Conv2d`` (in module order, i.e. the stem) for one with new input width.

    Every torchvision classifier starts with a Conv2d, so ``next`` always finds one.
    """
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    parent_name, _, attr = name.rpartition(".")
    replacement = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    setattr(model.get_submodule(parent_name), attr, replacement)


def default_input_size(arch: str) -> int:
    """Square input side a model is designed for: 224 for torchvision's ImageNet models, 32 for
    the built-in CIFAR/MNIST-sized nets (which also accept 28x28, as decided by the data)."""
    return 32 if _check_known(arch) in _BUILTIN else 224


#: Largest square input side srq accepts from a model file (a probe allocates one such image).
MAX_IMAGE_SIZE = 4096


def check_input_size(model: nn.Module, in_channels: int, image_size: int) -> None:
    """Raise :class:`SrqError` unless ``model`` runs on ``in_channels×image_size²`` inputs.

    Model files carry the input size they were trained at, and srq resizes data to it; a size
    the architecture cannot take (too small for its kernels, or damaged metadata) would
    otherwise fail deep inside the first forward with a shape traceback. One forward of a
    single zero image on the *float* model (before quantizers are attached, so no kernel is
    compiled) checks it for a fraction of a second.
    """
    if not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise SrqError(f"input size {image_size} is outside 1..{MAX_IMAGE_SIZE}")
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_channels, image_size, image_size))
    except RuntimeError as exc:
        raise SrqError(f"the model cannot run on {in_channels}×{image_size}×{image_size} inputs "
                       f"({short_reason(exc)})") from exc
    finally:
        model.train(was_training)
