"""Which architecture a state_dict belongs to, so ``srq quantize model.pt`` needs no name.

A state_dict holds no class name, but its keys and shapes pin the architecture down: each
candidate (srq's built-ins and every torchvision classifier) is built on the ``meta`` device
(no memory) with the input channels of the file's first convolution and the classes of its
last weight, and must have exactly the file's keys and shapes. The candidates' tensor names are
built once per process; only those with the file's names are built again at its sizes.
``num_batches_tracked`` buffers are ignored (older checkpoints lack them).

Candidates that cannot be built on the meta device (torchvision's RegNets compute their widths
from tensor values) are not tried; their users pass ``--arch``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

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


def _sizes(state: Mapping[str, Tensor]) -> tuple[int, int]:
    """(classes, input channels): the first dim of the last weight with ≥ 2 dims, the second of
    the first 4-D weight."""
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() >= 2]
    convs = [v for v in weights if v.dim() == 4]
    if not weights or not convs:
        raise SrqError("the state_dict has no convolution weights: not a vision model srq can quantize")
    return int(weights[-1].shape[0]), int(convs[0].shape[1])


def _candidate(arch: str, num_classes: int, in_channels: int) -> dict[str, tuple[int, ...]] | None:
    try:
        with torch.device("meta"):
            return _signature(build_model(arch, num_classes, in_channels).state_dict())
    except Exception:  # an architecture that cannot be built this way is simply not a candidate
        return None


@functools.lru_cache(maxsize=1)
def _key_sets() -> dict[str, frozenset[str]]:
    """Every candidate's tensor names (they do not depend on the class or channel counts):
    one meta build of each architecture per process, ~5 s on 2 cores."""
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
                   f"classifier (nearest: {nearest}); pass --arch NAME")
