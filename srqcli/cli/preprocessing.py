"""The image preprocessing flags of ``srq quantize`` and ``srq eval`` (:mod:`srqcli.preprocessing`).

Declared once so that both commands spell and explain them alike. ``--interpolation`` is a
string checked by srq rather than a Typer choice, so that a wrong value is srq's one-line
error and not Typer's usage box.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from srqcli.preprocessing import parse_floats

_DEFAULT = "default: the model's own, saved in an srq model file or published with quantize --weights; else"

ImageSize = Annotated[Optional[int], typer.Option(
    help=f"Input side in pixels: ImageFolder images are center-cropped to it (randomly when training), IDX and example images resized to it ({_DEFAULT} 224 for ImageFolder, the stored size for IDX).")]
ResizeSize = Annotated[Optional[int], typer.Option(
    help=f"ImageFolder: the shorter side is resized to this before the center crop ({_DEFAULT} image size / 0.875).")]
Mean = Annotated[Optional[str], typer.Option(
    help=f"ImageFolder: per-channel mean subtracted after scaling to [0, 1], comma-separated, e.g. 0.5,0.5,0.5 ({_DEFAULT} ImageNet's).")]
Std = Annotated[Optional[str], typer.Option(
    help=f"ImageFolder: per-channel standard deviation divided by, comma-separated, positive ({_DEFAULT} ImageNet's).")]
Channels = Annotated[Optional[int], typer.Option(
    help="ImageFolder: convert images to 1 (grayscale) or 3 (RGB) channels (default: the model's input channels, else 3).")]
Interpolation = Annotated[Optional[str], typer.Option(
    help=f"ImageFolder: resize filter, bilinear, bicubic or nearest ({_DEFAULT} bilinear).")]


def typed_preprocessing(image_size: int | None, resize_size: int | None, mean: str | None,
                        std: str | None, channels: int | None, interpolation: str | None
                        ) -> dict[str, Any]:
    """The flags as setting → value (``None``: not given), ``--mean``/``--std`` parsed to numbers.

    Their values are checked where they are used (the recipe, the data spec), in messages that
    start with the flag.
    """
    return {"image_size": image_size, "resize_size": resize_size, "mean": parse_floats(mean, "--mean"),
            "std": parse_floats(std, "--std"), "channels": channels,
            "interpolation": interpolation.strip().lower() if interpolation is not None else None}
