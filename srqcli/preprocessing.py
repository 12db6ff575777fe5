"""An image model's input preprocessing: resize, center crop, colour, normalization.

A model reproduces its accuracy only on inputs prepared the way it was trained, so srq keeps
these values wherever the model goes: the recipe (``[data]``), the model file's metadata, the
ONNX export (``srq.input``) and the report; ``srq eval`` and ``srq export --data`` reuse them.

Kept out of :mod:`srqcli.data` (which imports torchvision and scikit-learn) so that the recipe
can check the values without those slow imports. Only the standard library is used here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from srqcli.errors import SrqError

#: Image channels an ImageFolder image can be converted to, and what each is called.
COLOR = {1: "grayscale", 3: "RGB"}
CHANNELS = tuple(COLOR)
#: Resampling filters for resizing (torchvision's ``InterpolationMode`` values).
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
#: The settings, named alike in the recipe's ``[data]``, :class:`~srqcli.data.DataSpec` and here.
FIELDS = ("image_size", "resize_size", "mean", "std", "channels", "interpolation")
#: The flag of each setting (``srq quantize`` and ``srq eval``).
FLAGS = {name: "--" + name.replace("_", "-") for name in FIELDS}
#: The settings only ImageFolder data uses: IDX data and the example, held as tensors, take
#: ``image_size`` alone.
IMAGEFOLDER_ONLY = FIELDS[1:]


def check_preprocessing(mean: Sequence[float] | None, std: Sequence[float] | None,
                        channels: int | None, interpolation: str | None,
                        names: Mapping[str, str] | None = None) -> None:
    """Raise a one-line :class:`SrqError` for values no preprocessing can use; ``None``: unset.

    ``names`` says what to call each field in the message (``data.mean`` in a recipe, ``--mean``
    on a command line); the message starts with that name. Shared by the recipe, the data spec
    and :class:`Preprocessing` so that every way in checks the same rules.
    """
    name = {f: f for f in FIELDS} | dict(names or {})
    if channels is not None and channels not in CHANNELS:
        raise SrqError(f"{name['channels']} must be 1 (grayscale) or 3 (RGB), got {channels}")
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise SrqError(f"{name['interpolation']} must be one of {', '.join(INTERPOLATIONS)}, "
                       f"got {interpolation!r}")
    for field, values in (("mean", mean), ("std", std)):
        if values is None:
            continue
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise SrqError(f"{name[field]} must be finite numbers, got {_shown(values)}")
        if channels is not None and len(values) != channels:
            raise SrqError(f"{name[field]} has {_count(len(values))} but the images have {channels} "
                           f"channel{'s' if channels > 1 else ''} ({COLOR[channels]}); give one per channel")
        if len(values) not in CHANNELS:
            raise SrqError(f"{name[field]} has {_count(len(values))}; give one per channel: "
                           "3 for RGB images, 1 for grayscale")
    if std is not None and any(v <= 0 for v in std):
        raise SrqError(f"{name['std']} must be positive (the pixels are divided by it), got {_shown(std)}")
    if mean is not None and std is not None and len(mean) != len(std):
        raise SrqError(f"{name['std']} has {_count(len(std))} but {name['mean']} has {len(mean)}; "
                       "give one per channel to both")


def parse_floats(text: str | None, flag: str) -> list[float] | None:
    """``"0.5,0.5,0.5"`` (a flag's value) as numbers; ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        return [float(item) for item in text.split(",")]
    except ValueError:
        raise SrqError(f"{flag} takes comma-separated numbers like 0.5,0.5,0.5, got {text!r}") from None


@dataclass(frozen=True)
class Preprocessing:
    """How images become a model's input tensor, fully resolved (no defaults left to apply).

    Evaluation resizes the shorter side to ``resize_size`` and center-crops ``image_size``;
    training takes a random resized crop of ``image_size`` and a horizontal flip. Images are
    converted to ``channels`` (1: grayscale, 3: RGB), scaled to [0, 1] and normalized with
    ``mean`` and ``std`` per channel.
    """

    image_size: int
    resize_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        for name in ("image_size", "resize_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SrqError(f"{name.replace('_', ' ')} must be a whole number of at least 1, got {value!r}")
        if self.resize_size < self.image_size:
            raise SrqError(f"resize size {self.resize_size} is smaller than image size {self.image_size}; "
                           f"use a resize size >= {self.image_size}")
        check_preprocessing(self.mean, self.std, self.channels, self.interpolation)

    def describe(self) -> str:
        """One line, e.g. ``resize 36 → center-crop 32, bilinear, RGB, mean (0.5, 0.5, 0.5), …``."""
        return (f"resize {self.resize_size} → center-crop {self.image_size}, {self.interpolation}, "
                f"{COLOR[self.channels]}, mean {_shown(self.mean)}, std {_shown(self.std)}")

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "resize_size": self.resize_size,
                "mean": list(self.mean), "std": list(self.std), "channels": self.channels,
                "interpolation": self.interpolation}

    @classmethod
    def from_dict(cls, data: Any) -> Preprocessing:
        """The inverse of :meth:`to_dict`; a one-line :class:`SrqError` for anything else."""
        if not isinstance(data, Mapping) or set(data) != set(FIELDS):
            raise SrqError(f"preprocessing must be an object with the keys {', '.join(FIELDS)}")
        if not all(isinstance(data[k], list) for k in ("mean", "std")):
            raise SrqError("preprocessing mean and std must be lists of numbers")
        return cls(data["image_size"], data["resize_size"], tuple(data["mean"]), tuple(data["std"]),
                   data["channels"], data["interpolation"])


def _count(n: int) -> str:
    return f"{n} value{'s' if n != 1 else ''}"


def _shown(values: Sequence[Any]) -> str:
    return "(" + ", ".join(f"{v:g}" if isinstance(v, (int, float)) else repr(v) for v in values) + ")"
