"""Loading float model weights from user files without trusting them.

Checkpoints come from the internet as often as from the user's own training runs, and
``torch.load`` with ``weights_only=False`` executes whatever a pickle tells it to. So the
default path only uses loaders that cannot run arbitrary Python: ``torch.load`` with
``weights_only=True``, safetensors and TorchScript. Full unpickling happens only when the user
opted in with ``trust_pickle=True`` (``--trust-pickle``).

The loader is chosen by the file's content (:mod:`srqcli.io.sniff`), not its suffix. Every
failure caused by the file becomes a one-line :class:`SrqError` that says what to do, because
torch's own messages are multi-line, mention internals (miniz, ``add_safe_globals``) and
sometimes suggest ``weights_only=False`` without the security caveat that matters here; a file
no loader can read is described from its bytes.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from srqcli.errors import SrqError, short_reason
from srqcli.io import pt2
from srqcli.io.sniff import PICKLE_PROTO, diagnosis, looks_like_safetensors

# Keys under which training scripts commonly nest the weights, in order of preference: the
# plain weights first, EMA weights only when nothing else is there.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "ema")
# Prefixes added by DistributedDataParallel and torch.compile that the bare model lacks.
_KEY_PREFIXES = ("module.", "_orig_mod.")
_NAMES_PER_CATEGORY = 3


def read_state_dict(
    path: str | os.PathLike, *, trust_pickle: bool = False
) -> dict[str, torch.Tensor] | nn.Module:
    """Read the float weights stored at ``path``.

    Returns a ``{name: tensor}`` dict with DDP/``torch.compile`` key prefixes removed and
    common wrappers (``{"state_dict": ...}``, ``{"model": ...}``, ...) unwrapped. Only with
    ``trust_pickle`` can a whole pickled ``nn.Module`` come back, because only then may the
    file be fully unpickled.
    """
    file = Path(path)
    if not file.exists():
        raise SrqError(f"checkpoint not found: {file}")
    if not file.is_file():
        raise SrqError(f"checkpoint {file} is not a file")
    if file.stat().st_size == 0:
        raise SrqError(f"checkpoint {file} is empty (0 bytes)")

    if file.suffix.lower() == ".safetensors" or looks_like_safetensors(file):
        try:
            loaded: object = safetensors.torch.load_file(file, device="cpu")
        except Exception as exc:  # the Rust loader raises its own exception types
            reason = short_reason(exc)
            raise SrqError(f"{file} is not a valid safetensors file: {reason}") from exc
    elif pt2.is_pt2(file):
        loaded = pt2.read_weights(file, trust_pickle=trust_pickle)
    elif _is_torchscript(file):
        loaded = _load_torchscript(file)
    else:
        loaded = _torch_load(file, trust_pickle=trust_pickle)

    return _extract_state_dict(loaded, file, trust_pickle=trust_pickle)


#: What :func:`weights_kind` calls a ``torch.export`` file.
EXPORTED_PROGRAM = "torch.export program"


def weights_kind(file: Path) -> str:
    """What a readable weights file holds, in words for notes: a ``state_dict``, a
    ``TorchScript model`` or a :data:`EXPORTED_PROGRAM`."""
    if pt2.is_pt2(file):
        return EXPORTED_PROGRAM
    return "TorchScript model" if _is_torchscript(file) else "state_dict"


def load_into(
    model: nn.Module, source: dict[str, torch.Tensor] | nn.Module, *, arch: str
) -> nn.Module:
    """Load ``source`` into ``model`` strictly and return the model in eval mode.

    Every key and shape is checked here first so that a wrong ``--arch``/``--num-classes``
    produces one line naming the offending keys instead of torch's multi-line RuntimeError.
    Tensors are cast to the dtype of the model tensor they replace (e.g. a half-precision
    checkpoint into a float32 model).
    """
    given = source.state_dict() if isinstance(source, nn.Module) else source
    weights = _strip_prefixes(dict(given))
    expected = model.state_dict()

    # BatchNorm checkpoints from before torch 0.4.1 lack this counter; torch's own strict
    # loading tolerates that, so the fresh model's value is kept instead of failing.
    for key, tensor in expected.items():
        if key.endswith("num_batches_tracked") and key not in weights:
            weights[key] = tensor

    missing = [key for key in expected if key not in weights]
    unexpected = [key for key in weights if key not in expected]
    mismatched = [
        f"{key}: checkpoint {list(weights[key].shape)} vs model {list(tensor.shape)}"
        for key, tensor in expected.items()
        if key in weights and weights[key].shape != tensor.shape
    ]
    problems = []
    if missing:
        noun = "missing key" if len(missing) == 1 else "missing keys"
        problems.append(f"{len(missing)} {noun} ({_name_list(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_name_list(unexpected)})")
    if mismatched:
        noun = "shape mismatch" if len(mismatched) == 1 else "shape mismatches"
        problems.append(f"{len(mismatched)} {noun} ({_name_list(mismatched)})")
    if problems:
        raise SrqError(
            f"checkpoint does not fit {arch}: {', '.join(problems)}; "
            "check the architecture, --num-classes and the input channels"
        )

    model.load_state_dict(
        {key: weights[key].to(dtype=tensor.dtype) for key, tensor in expected.items()}, strict=True
    )
    return model.eval()


def _is_torchscript(file: Path) -> bool:
    """Tell TorchScript archives apart from ``torch.save`` zips by their layout.

    Both are zip files with one top-level folder; only TorchScript has ``code/`` (the
    serialized TorchScript source) or ``constants.pkl`` in it. ``torch.load`` refuses
    TorchScript with ``weights_only=True``, so it has to be routed to ``torch.jit.load``.
    """
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
    # Not a zip at all, or a damaged one (a bit flip in a name raises UnicodeDecodeError, a
    # ValueError): either way torch.load reports it with the file's name.
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError):
        return False
    for name in names:
        parts = name.split("/")
        if len(parts) >= 2 and parts[1] in ("code", "constants.pkl"):
            return True
    return False


def _load_torchscript(file: Path) -> dict[str, torch.Tensor]:
    """Read a TorchScript archive's weights; its unpickler only rebuilds TorchScript types."""
    try:
        with warnings.catch_warnings():
            # The user chose the file format; a deprecation notice about the loader is noise.
            warnings.filterwarnings(
                "ignore", message=r".*torch\.jit\.load.*", category=FutureWarning
            )
            module = torch.jit.load(str(file), map_location="cpu")
    except Exception as exc:  # TorchScript reports every defect as a RuntimeError variant
        raise _unreadable(file, exc) from exc
    return dict(module.state_dict())


def _torch_load(file: Path, *, trust_pickle: bool) -> object:
    """``torch.load`` restricted to tensors and plain containers unless the user trusts the file."""
    try:
        with warnings.catch_warnings():
            # Raised for pickles written with a newer protocol; the load either works or the
            # failure is reported below, so the warning only adds noise.
            warnings.filterwarnings(
                "ignore", message=r"Detected pickle protocol", category=UserWarning
            )
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Random bytes and cut-off files also fail as UnpicklingError; only call it pickled
        # objects when the file is shaped like something torch.save or pickle.dump wrote.
        if not _looks_like_pickle(file) or _is_truncated(exc):
            raise SrqError(diagnosis(file)) from exc
        if not trust_pickle:
            raise SrqError(
                f"{file} contains pickled Python objects (e.g. a whole nn.Module); re-save it as "
                "a state_dict, or pass --trust-pickle if you trust its source"
            ) from exc
    except Exception as exc:  # truncated zips, EOF, bad magic numbers: all mean "unreadable"
        raise SrqError(diagnosis(file)) from exc

    try:
        return torch.load(file, map_location="cpu", weights_only=False)
    except Exception as exc:  # e.g. the pickled class's module cannot be imported here
        if isinstance(exc, (pickle.UnpicklingError, EOFError)) and not zipfile.is_zipfile(file):
            raise SrqError(diagnosis(file)) from exc
        raise _unreadable(file, exc) from exc


def _unreadable(file: Path, exc: Exception) -> SrqError:
    """The error for a file of a known format that its loader refused, with its reason kept
    short (e.g. the module of a pickled class that this Python cannot import)."""
    return SrqError(f"{file} is not a readable PyTorch checkpoint: {short_reason(exc)}")


def _looks_like_pickle(file: Path) -> bool:
    """Whether ``file`` is a zip (``torch.save``'s format) or starts like a modern pickle."""
    if zipfile.is_zipfile(file):
        return True
    with file.open("rb") as handle:
        return handle.read(1) == PICKLE_PROTO


def _is_truncated(exc: pickle.UnpicklingError) -> bool:
    """Whether the pickle ended early (a cut-off download), rather than naming a global."""
    return "truncated" in str(exc) or isinstance(exc.__cause__ or exc.__context__, EOFError)


def _extract_state_dict(
    loaded: object, file: Path, *, trust_pickle: bool
) -> dict[str, torch.Tensor] | nn.Module:
    """Unwrap the weights from what a loader returned, or explain that there are none."""
    if isinstance(loaded, Mapping):
        for key in _WRAPPER_KEYS:
            inner = loaded.get(key)
            if _is_tensor_dict(inner) or (trust_pickle and isinstance(inner, nn.Module)):
                loaded = inner
                break
    if isinstance(loaded, nn.Module):
        return loaded
    if not _is_tensor_dict(loaded):
        raise SrqError(f"{file} does not contain a state_dict")
    return _strip_prefixes(dict(loaded))


def _is_tensor_dict(value: object) -> bool:
    """A non-empty mapping of ``str`` to tensors, i.e. something shaped like a state_dict."""
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _strip_prefixes(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes shared by *every* key.

    Requiring all keys to carry the prefix keeps a model whose submodules merely start with
    ``module`` intact; looping handles a compiled DDP model (``module._orig_mod.``).
    """
    while weights:
        prefix = next((p for p in _KEY_PREFIXES if all(k.startswith(p) for k in weights)), None)
        if prefix is None:
            break
        weights = {key[len(prefix):]: tensor for key, tensor in weights.items()}
    return weights


def _name_list(names: list[str]) -> str:
    """At most a few names, so one bad architecture does not print hundreds of keys."""
    shown = ", ".join(names[:_NAMES_PER_CATEGORY])
    return shown + ", …" if len(names) > _NAMES_PER_CATEGORY else shown
