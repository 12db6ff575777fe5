"""torchvision's pretrained weights by name (``--weights IMAGENET1K_V1``), from torch's hub cache.

srq never downloads at run time by surprise: the file is looked up in torch's hub cache
(``$TORCH_HOME/hub/checkpoints``, where torchvision itself keeps it) and fetched there only when
it is missing and the machine is online; offline, the one-line error names the file to place.
"""

from __future__ import annotations

from pathlib import Path

from srqcli.errors import SrqError, short_reason


def _weights_enum(arch: str, name: str):
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (KeyError, ValueError) as exc:
        raise SrqError(f"--weights: {arch} has no torchvision pretrained weights; pass -c WEIGHTS") from exc
    choices = list(enum.__members__)
    if name not in enum.__members__:
        raise SrqError(f"--weights: {arch} has no weights {name!r}; choose one of {', '.join(choices)}")
    return enum[name]


def cached_weights_file(arch: str, name: str) -> Path:
    """The hub-cache file of ``arch``'s torchvision weights ``name``, downloaded if missing."""
    import torch

    weights = _weights_enum(arch, name)
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    file = folder / Path(weights.url).name
    if file.is_file():
        return file
    try:
        torch.hub.download_url_to_file(weights.url, str(file), progress=True)
    except Exception as exc:  # URLError, socket and SSL errors: all mean "not online"
        file.unlink(missing_ok=True)
        raise SrqError(f"--weights {name}: {file.name} is not in torch's hub cache and cannot be "
                       f"downloaded ({short_reason(exc)}); place {weights.url} at {file}") from exc
    return file
