"""What the user asked for (:class:`DataSpec`) and what was loaded (:class:`DatasetBundle`).

Kept apart from the loaders so every dataset kind can build a bundle without import cycles.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from srqcli.errors import SrqError
from srqcli.preprocessing import Preprocessing, check_preprocessing


@dataclass(frozen=True)
class DataSpec:
    """Where the data comes from and how to prepare it; built from CLI flags / recipes.

    ``source`` is ``'example'`` (scikit-learn's bundled digits, no download) or a directory of
    MNIST-style IDX files or an ImageFolder tree with ``train/`` and ``val/``.
    ``train_limit``/``val_limit`` keep a fixed, seeded random subset for quick runs; a random
    rather than leading subset because ImageFolder samples are sorted by class.
    ``strict`` makes an unreadable ImageFolder image an error instead of a skipped sample.
    ``resize_size``, ``mean``, ``std``, ``channels`` and ``interpolation`` set how ImageFolder
    images are prepared (``None``: the defaults of :mod:`srqcli.data.imagefolder`); IDX data and
    the example are 1-channel tensors normalized with their own training statistics and do not
    use them (:meth:`DatasetBundle.refuse_preprocessing` says so instead of ignoring a flag).
    """

    source: str
    batch_size: int = 128
    workers: int = 0
    image_size: int | None = None
    resize_size: int | None = None
    train_limit: int | None = None
    val_limit: int | None = None
    strict: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int | None = None
    interpolation: str | None = None

    def __post_init__(self) -> None:
        # Checked here, where the values enter, so a typo fails before any data is read.
        _require(self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}")
        _require(self.workers >= 0, f"data loader workers must be 0 or more, got {self.workers}")
        for name in ("image_size", "resize_size", "train_limit", "val_limit"):
            value = getattr(self, name)
            label = name.replace("_", " ")
            _require(value is None or value >= 1, f"{label} must be at least 1, got {value}")
        for name in ("mean", "std"):  # lists from a recipe or flag: stored as tuples, like the bundle's
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        check_preprocessing(self.mean, self.std, self.channels, self.interpolation)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SrqError(message)


@dataclass
class DatasetBundle:
    """Train and held-out validation datasets plus the facts a model and a report need.

    ``mean``/``std`` are the per-channel normalization already applied to every sample, kept
    so an exported model can document the preprocessing it expects; ``preprocessing`` is the
    whole transform of ImageFolder data (``None`` for the in-memory tensor datasets).
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
    preprocessing: Preprocessing | None = None

    def refuse_preprocessing(self, given: list[str]) -> None:
        """Refuse, in one line, ImageFolder preprocessing settings (``given``: the flags the user
        set) for data that has no use for them: a flag must never be silently ignored."""
        if given and self.preprocessing is None:
            raise SrqError(f"{', '.join(given)} set{'s' if len(given) == 1 else ''} how ImageFolder "
                           f"images are prepared, but the {self.kind} data is 1-channel tensors "
                           f"normalized with their own training statistics; drop "
                           f"{'it' if len(given) == 1 else 'them'}")

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
