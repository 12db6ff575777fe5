"""``srq quantize MODEL``: MODEL may be a weights file or the user's code instead of a name.

Users hold their model as a file (``model.pt``, a TorchScript or ``torch.export`` file); the
architecture is then read from the file itself (:mod:`srqcli.models.infer`), or given with
``--arch``, and the file becomes the run's checkpoint. Or they hold it as code: MODEL
``package.module:Class`` imports it (:mod:`srqcli.models.user`), with ``-c`` for its weights.
A name keeps working as before (architecture name plus ``-c WEIGHTS``).
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
    """Architecture and weights from the positional MODEL (a name, a weights file or code)."""
    from srqcli.models.user import is_import_path

    if not Path(model).is_file():
        if is_import_path(model):
            if arch is not None:
                raise SrqError(f"--arch names the architecture of a MODEL weights file; {model} is "
                               "code that builds its own")
            return ModelSource(model, checkpoint, note=user_code(model))
        return ModelSource(arch or model, checkpoint)
    if checkpoint is not None:
        raise SrqError(f"{model} is a weights file and --checkpoint {checkpoint} another: pass the "
                       "weights once (as MODEL, or an architecture name as MODEL with -c)")
    if arch is not None:
        imported = f"; {user_code(arch)}" if is_import_path(arch) else ""
        return ModelSource(arch, model, note=f"model: {model}, architecture {arch} (--arch){imported}")
    from torch import nn

    from srqcli.io.checkpoint import EXPORTED_PROGRAM, read_state_dict, weights_kind
    from srqcli.models.infer import infer_architecture
    from srqcli.nn.surgery import float_state_dict

    kind = weights_kind(Path(model))
    state = read_state_dict(model, trust_pickle=trust_pickle)
    if isinstance(state, nn.Module):
        raise SrqError(f"{model} is a whole pickled model: pass its architecture with --arch NAME")
    try:
        match = infer_architecture(float_state_dict(state))
    except SrqError as exc:
        if kind != EXPORTED_PROGRAM:
            raise
        raise SrqError(f"{model} is a torch.export program, whose graph srq cannot quantize (it has "
                       f"no nn.Conv2d/nn.Linear modules left), and its weights do not say the "
                       f"architecture: {exc}") from exc
    rebuilt = f"; srq rebuilds {match.arch} with its weights" if kind == EXPORTED_PROGRAM else ""
    return ModelSource(match.arch, model, match.num_classes, match.in_channels,
                       note=(f"model: {model} is a {kind} of {match.arch} ({match.num_classes} classes, "
                             f"{match.in_channels} input channels), found by its tensor names and "
                             f"shapes{rebuilt}"))


def user_code(spec: str) -> str:
    """Import the user's code named on the command line and say so (one line: importing runs
    the module's code, which the user should see happen)."""
    from srqcli.models.user import load_factory

    load_factory(spec)
    return f"model: imported user code {spec} (its module ran as Python code)"
