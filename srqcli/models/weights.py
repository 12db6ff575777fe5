"""torchvision's pretrained weights by name (``--weights IMAGENET1K_V1``), from torch's hub cache.

srq never downloads at run time by surprise: the file is looked up in torch's hub cache
(``$TORCH_HOME/hub/checkpoints``, where torchvision itself keeps it) and fetched there only when
it is missing and the machine is online; offline, the one-line error names the file to place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from srqcli.errors import SrqError, short_reason
from srqcli.preprocessing import INTERPOLATIONS


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


def weights_preprocessing(arch: str, name: str) -> dict[str, Any]:
    """The preprocessing torchvision publishes with ``arch``'s weights ``name`` (what their
    accuracy was measured with), as recipe ``[data]`` settings. Read from the attributes of the
    weights' ``transforms()`` (crop and resize size, mean, std, interpolation): no download."""
    transforms = _weights_enum(arch, name).transforms()
    settings: dict[str, Any] = {}
    for key, attribute in (("image_size", "crop_size"), ("resize_size", "resize_size")):
        value = getattr(transforms, attribute, None)
        if value:  # torchvision keeps a size as a one-item list
            settings[key] = int(value[0] if isinstance(value, (list, tuple)) else value)
    for key in ("mean", "std"):
        value = getattr(transforms, key, None)
        if value:
            settings[key] = [float(v) for v in value]
    mode = getattr(getattr(transforms, "interpolation", None), "value", None)
    if mode in INTERPOLATIONS:
        settings["interpolation"] = mode
    return settings
