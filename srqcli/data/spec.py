"""What the user asked for (:class:`DataSpec`) and what was loaded (:class:`DatasetBundle`).

Kept apart from the loaders so every dataset kind can build a bundle without import cycles.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from srqcli.errors import SrqError


@dataclass(frozen=True)
class DataSpec:
    """Where the data comes from and how to prepare it; built from CLI flags / recipes.

    ``source`` is ``'example'`` (scikit-learn's bundled digits, no download) or a directory of
    MNIST-style IDX files or an ImageFolder tree with ``train/`` and ``val/``.
    ``train_limit``/``val_limit`` keep a fixed, seeded random subset for quick runs; a random
    rather than leading subset because ImageFolder samples are sorted by class.
    ``strict`` makes an unreadable ImageFolder image an error instead of a skipped sample.
    """

    source: str
    batch_size: int = 128
    workers: int = 0
    image_size: int | None = None
    resize_size: int | None = None
    train_limit: int | None = None
    val_limit: int | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        # Checked here, where the values enter, so a typo fails before any data is read.
        _require(self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}")
        _require(self.workers >= 0, f"data loader workers must be 0 or more, got {self.workers}")
        for name in ("image_size", "resize_size", "train_limit", "val_limit"):
            value = getattr(self, name)
            label = name.replace("_", " ")
            _require(value is None or value >= 1, f"{label} must be at least 1, got {value}")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SrqError(message)


@dataclass
class DatasetBundle:
    """Train and held-out validation datasets plus the facts a model and a report need.

    ``mean``/``std`` are the per-channel normalization already applied to every sample, kept
    so an exported model can document the preprocessing it expects.
    """

    train: Dataset
    val: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    class_names: list[str]
    kind: str
    description: str
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def check_fits(self, num_classes: int, in_channels: int, fix: str) -> None:
        """Refuse, in one line, a model whose input channels or classes differ from this data's.

        Checked before the first batch: a mismatch otherwise surfaces as a shape error deep in
        torch. ``fix`` tells the user what to change (it differs per command).
        """
        if in_channels != self.in_channels:
            raise SrqError(f"the model takes {in_channels}-channel images but the data has "
                           f"{self.in_channels} channels; {fix}")
        if num_classes != self.num_classes:
            raise SrqError(f"the model has {num_classes} classes but the data has "
                           f"{self.num_classes}; {fix}")
