"""Which architecture a state_dict belongs to, so ``srq quantize model.pt`` needs no name.

A state_dict holds no class name, but its keys and shapes pin the architecture down: each
candidate (srq's built-ins and every torchvision classifier) is built on the ``meta`` device
(no memory) with the input channels of the file's first convolution and the classes of its
last weight, and must have exactly the file's keys and shapes. The candidates' tensor names are
built once per process; only those with the file's names are built again at its sizes.
``num_batches_tracked`` buffers are ignored (older checkpoints lack them).

torchvision's RegNets compute their stage widths with tensor arithmetic and read the values
back (``.tolist()``), which a meta tensor cannot do; they are built with only ``torch.empty``
(every layer's weight) on the meta device and the small width arithmetic on the CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from srqcli.errors import SrqError
from srqcli.models import build_model, list_architectures


@dataclass(frozen=True)
class ArchMatch:
    """The architecture a state_dict was matched to, and the sizes read from it."""

    arch: str
    num_classes: int
    in_channels: int


def _signature(state: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}


#: How every "no architecture matches" error ends: what the user can pass instead.
_INSTEAD = "pass --arch NAME, or the model's class as package.module:Class"


def _sizes(state: Mapping[str, Tensor]) -> tuple[int, int]:
    """(classes, input channels): the first dim of the last weight with ≥ 2 dims, the second of
    the first 4-D weight. Every candidate starts with a convolution, so a state_dict without
    one (an LSTM, a text transformer, an MLP) matches none of them."""
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() >= 2]
    convs = [v for v in weights if v.dim() == 4]
    if not weights or not convs:
        raise SrqError(f"the state_dict ({len(state)} tensors) matches no built-in or torchvision "
                       f"classifier: it has no convolution weights (a text or tabular model?); {_INSTEAD}")
    return int(weights[-1].shape[0]), int(convs[0].shape[1])


class _WeightsOnMeta(TorchFunctionMode):
    """``torch.empty`` on the meta device, every other tensor where it would be.

    Layers allocate their weights with ``torch.empty`` before initialising them in place (a
    no-op on meta), so the big tensors cost nothing, while a builder's own arithmetic on small
    tensors (RegNet's widths) keeps real values it can read back.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.empty:
            kwargs = {**(kwargs or {}), "device": "meta"}
        return func(*args, **(kwargs or {}))


def _candidate(arch: str, num_classes: int, in_channels: int) -> dict[str, tuple[int, ...]] | None:
    """``arch``'s signature at these sizes, built without memory: wholly on the meta device,
    else (a builder that reads tensor values back) with only its weights there."""
    for device in (torch.device("meta"), _WeightsOnMeta()):
        try:
            with device:
                return _signature(build_model(arch, num_classes, in_channels).state_dict())
        except Exception:  # noqa: BLE001 (tried the other way, else simply not a candidate)
            continue
    return None


@functools.lru_cache(maxsize=1)
def _key_sets() -> dict[str, frozenset[str]]:
    """Every candidate's tensor names (they do not depend on the class or channel counts):
    one meta build of each architecture per process, ~6 s on 2 idle cores."""
    built = {arch: _candidate(arch, 10, 3) for arch in list_architectures()}
    return {arch: frozenset(sig) for arch, sig in built.items() if sig is not None}


def infer_architecture(state: Mapping[str, Tensor]) -> ArchMatch:
    """The one architecture whose keys and shapes are exactly ``state``'s; one-line
    :class:`SrqError` listing the candidates when none or several match."""
    num_classes, in_channels = _sizes(state)
    want = _signature(state)
    keys = frozenset(want)
    same_keys = [arch for arch, names in _key_sets().items() if names == keys]
    matches = [arch for arch in same_keys if _candidate(arch, num_classes, in_channels) == want]
    if len(matches) == 1:
        return ArchMatch(matches[0], num_classes, in_channels)
    if matches:
        raise SrqError(f"the state_dict fits several architectures ({', '.join(matches)}); "
                       "pass --arch NAME")
    overlap = sorted(((len(keys & names) / len(keys | names), arch) for arch, names in _key_sets().items()),
                     reverse=True)[:3]
    nearest = ", ".join(f"{arch} ({share:.0%} of tensor names)" for share, arch in overlap)
    raise SrqError(f"the state_dict ({len(want)} tensors) matches no built-in or torchvision "
                   f"classifier (nearest: {nearest}); {_INSTEAD}")
