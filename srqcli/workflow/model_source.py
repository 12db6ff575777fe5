"""``srq quantize MODEL``: MODEL may be a weights file instead of an architecture name.

Users hold their model as a file (``model.pt``); the architecture is then read from the file
itself (:mod:`srqcli.models.infer`), or given with ``--arch``, and the file becomes the run's
checkpoint. A name keeps working as before (architecture name plus ``-c WEIGHTS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from srqcli.errors import SrqError


@dataclass(frozen=True)
class ModelSource:
    """What MODEL named: the architecture, the weights file (or ``None``) and, read from the
    file, the class and input-channel counts; ``note``: one line saying how it was found."""

    arch: str
    checkpoint: str | None
    num_classes: int | None = None
    in_channels: int | None = None
    note: str | None = None


def resolve_model(model: str, *, checkpoint: str | None, arch: str | None,
                  trust_pickle: bool) -> ModelSource:
    """Architecture and weights from the positional MODEL (a name or a weights file)."""
    if not Path(model).is_file():
        return ModelSource(arch or model, checkpoint)
    if checkpoint is not None:
        raise SrqError(f"{model} is a weights file and --checkpoint {checkpoint} another: pass the "
                       "weights once (as MODEL, or an architecture name as MODEL with -c)")
    if arch is not None:
        return ModelSource(arch, model, note=f"model: {model}, architecture {arch} (--arch)")
    from torch import nn

    from srqcli.io.checkpoint import read_state_dict
    from srqcli.models.infer import infer_architecture
    from srqcli.nn.surgery import float_state_dict

    state = read_state_dict(model, trust_pickle=trust_pickle)
    if isinstance(state, nn.Module):
        raise SrqError(f"{model} is a whole pickled model: pass its architecture with --arch NAME")
    match = infer_architecture(float_state_dict(state))
    return ModelSource(match.arch, model, match.num_classes, match.in_channels,
                       note=(f"model: {model} is a state_dict of {match.arch} ({match.num_classes} classes, "
                             f"{match.in_channels} input channels), found by its tensor names and shapes"))
