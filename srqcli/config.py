"""Typed run configuration ("recipe"), loaded from TOML and overridable from the CLI.

A recipe holds every setting of a run. It is versioned, validated strictly (an unknown key or a
wrong type is an error naming the key, so a typo never silently falls back to a default) and
saved, fully resolved, next to every output so a run can be replayed with
``srq quantize --recipe RUN/recipe.toml``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from srqcli.core.grid import MAX_BITS, MIN_BITS
from srqcli.core.names import PI_MODES, VARIANTS
from srqcli.errors import SrqError
from srqcli.methods.names import METHODS
from srqcli.preprocessing import check_preprocessing

RECIPE_VERSION = 1
BUILTIN_RECIPES = Path(__file__).parent / "recipes"


@dataclass
class ModelConfig:
    arch: str = "lenet5"
    num_classes: int | None = None  # None: from the data
    in_channels: int | None = None  # None: from the data
    checkpoint: str | None = None
    pretrain_epochs: int = 0  # >0: train the float model first when no checkpoint is given
    pretrain_lr: float = 1e-3


@dataclass
class DataConfig:
    source: str = "example"
    image_size: int | None = None
    resize_size: int | None = None
    batch_size: int = 128
    workers: int = 0
    calib_batches: int = 4
    train_limit: int | None = None
    val_limit: int | None = None
    strict: bool = False  # an unreadable ImageFolder image is an error, not a skipped sample
    # How ImageFolder images are prepared (srqcli/preprocessing.py); None: the --weights' own
    # values, else the model's input channels, bilinear and ImageNet's mean/std.
    mean: list[float] | None = None  # one per channel
    std: list[float] | None = None
    channels: int | None = None  # 1: grayscale, 3: RGB
    interpolation: str | None = None  # bilinear | bicubic | nearest


@dataclass
class QuantConfig:
    method: str = "srq"  # srq | rq | lsq | ste | slb | dq (srqcli/methods)
    weight_bits: int = 4
    act_bits: int = 4
    input_bits: int = 8  # the network input
    # quantize float-read layer outputs too (srqcli/nn/output_quant.py), so every conv of the
    # exported file is an integer kernel (fast and bit-exact); 0: leave them float
    output_bits: int = 8
    # after training, move the BN-folded biases onto onnxruntime's int32 grid, so the trained
    # model computes what the exported file computes (srqcli/deploy/snap.py)
    snap_biases: bool = True
    first_last_bits: int | None = None  # None: first/last layers use weight_bits/act_bits
    skip: list[str] = field(default_factory=list)  # fnmatch patterns of layers left float
    per_channel: bool = False
    pi_mode: str = "detach"
    window: int | None = None
    sigma_init: float = 0.25
    sigma_max: float = 0.5  # cap of σ/α (an ablation knob: docs/method.md §4)
    layers: dict[str, dict[str, int]] = field(default_factory=dict)  # pattern → {weight_bits, act_bits}
    temperature_start: float | None = None  # rq/slb annealed temperature; None: the method's default
    temperature_end: float | None = None


@dataclass
class DropBitsConfig:
    variant: str = "lsb"  # none | top | lsb | mask (default chosen by measurement: docs/method-decisions.md)
    rate: float = 0.05
    anneal_epochs: int = 1  # rate decays linearly to 0 over the last N epochs
    bn_reestimate_batches: int = 50  # BatchNorm re-estimation with DropBits off (0: skip)


@dataclass
class TrainConfig:
    epochs: int = 3
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-4
    quant_lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"  # cosine | constant
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # mixed precision on CUDA only
    fused: bool = True  # torch.compile the SRQ backward
    compile: bool = False  # torch.compile the whole model for training (one graph; docs/method-decisions.md)
    checkpoint_every: int = 0  # also write the resume checkpoint every N steps (0: by time only)
    checkpoint_minutes: float = 10.0  # ... and every N minutes (0: only N steps / epoch ends)


@dataclass
class Recipe:
    version: int = RECIPE_VERSION
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    dropbits: DropBitsConfig = field(default_factory=DropBitsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def validate(self) -> Recipe:
        """Check value ranges; raises :class:`SrqError` naming the offending key.

        Flags and recipe keys both end here (:func:`apply_overrides` revalidates), so one
        table of ranges (:data:`RANGES`) covers ``--lr`` and ``train.lr`` alike: an
        out-of-range number must fail in one line before any work, not as a library
        traceback or a run that silently learns nothing (a negative ``quant_lr``).
        """
        for dotted, allowed in RANGES.items():
            section, key = dotted.split(".")
            check_range(dotted, getattr(getattr(self, section), key), allowed)
        d = self.data
        check_preprocessing(d.mean, d.std, d.channels, d.interpolation,
                            {name: f"data.{name}" for name in ("mean", "std", "channels", "interpolation")})
        q = self.quant
        if q.output_bits != 0:
            check_range("quant.output_bits", q.output_bits, BITS)  # 0: off
        for pattern, bits in q.layers.items():
            if not isinstance(bits, dict):
                raise SrqError(f"quant.layers.{pattern!r} must be a table like {{ weight_bits = 3 }}, "
                               f"got {bits!r}")
            for key, value in bits.items():
                if key not in ("weight_bits", "act_bits"):
                    raise SrqError(f"quant.layers.{pattern!r}: unknown key {key!r} (use weight_bits, act_bits)")
                if not _type_ok(value, int):
                    raise SrqError(f"quant.layers.{pattern!r}.{key} must be a whole number of bits, "
                                   f"got {value!r}")
                check_range(f"quant.layers.{pattern!r}.{key}", value, BITS)
        if q.pi_mode not in PI_MODES:
            raise SrqError(f"quant.pi_mode must be one of {', '.join(PI_MODES)}, got {q.pi_mode!r}")
        if q.sigma_max < q.sigma_init:
            raise SrqError(f"quant.sigma_max must be at least quant.sigma_init ({q.sigma_init}), "
                           f"got {q.sigma_max}")
        if q.method not in METHODS:
            raise SrqError(f"quant.method must be one of {', '.join(METHODS)}, got {q.method!r}")
        if q.method == "dq" and q.per_channel:
            raise SrqError("quant.per_channel is not supported with method dq (one level set per tensor)")
        d = self.dropbits
        if d.variant not in ("none", *VARIANTS):
            raise SrqError(f"dropbits.variant must be one of none, {', '.join(VARIANTS)}, got {d.variant!r}")
        if q.method != "srq" and d.variant != "none":
            raise SrqError(f"DropBits is part of SRQ: with quant.method = {q.method!r} set "
                           "dropbits.variant = \"none\" (--no-dropbits)")
        t = self.train
        if t.optimizer not in ("adam", "sgd"):
            raise SrqError(f"train.optimizer must be adam or sgd, got {t.optimizer!r}")
        if t.schedule not in ("cosine", "constant"):
            raise SrqError(f"train.schedule must be cosine or constant, got {t.schedule!r}")
        if t.device not in ("auto", "cpu", "cuda"):
            raise SrqError(f"train.device must be auto, cpu or cuda, got {t.device!r}")
        if self.version != RECIPE_VERSION:
            raise SrqError(f"recipe version {self.version} is not supported (this srq reads version {RECIPE_VERSION})")
        return self


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: ``low``..``high``, either end open or closed.

    Infinity and NaN are never in a range (TOML and ``--lr nan`` can both spell them).
    """

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        if self.high == math.inf:
            if self.low_open:
                return "positive" if self.low == 0 else f"above {self.low:g}"
            return f"at least {self.low:g}"
        if isinstance(self.low, int) and isinstance(self.high, int):  # a closed range of counts
            return f"between {self.low} and {self.high}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, "
                f"{self.high:g}{')' if self.high_open else ']'}")


def check_range(key: str, value: float | None, allowed: Range) -> None:
    """Raise :class:`SrqError` naming ``key`` when ``value`` (``None``: unset) is outside ``allowed``."""
    if value is not None and not allowed.holds(value):
        raise SrqError(f"{key} must be {allowed.describe()}, got {value}")


BITS = Range(MIN_BITS, MAX_BITS)
#: A learning rate: 0 freezes the parameters (an ablation); above 10 no optimiser srq uses
#: trains, so a larger value is a typo.
LEARNING_RATE = Range(0.0, 10.0)
COUNT, POSITIVE_COUNT = Range(0), Range(1)
#: The range of every numeric recipe key (``None`` values mean "unset" and are not checked).
RANGES: dict[str, Range] = {
    "model.num_classes": Range(2),
    "model.in_channels": POSITIVE_COUNT,
    "model.pretrain_epochs": COUNT,
    "model.pretrain_lr": Range(0.0, 10.0, low_open=True),  # 0 would "train" a random model
    "data.image_size": POSITIVE_COUNT,
    "data.resize_size": POSITIVE_COUNT,
    "data.batch_size": POSITIVE_COUNT,
    "data.workers": COUNT,
    "data.calib_batches": POSITIVE_COUNT,
    "data.train_limit": POSITIVE_COUNT,
    "data.val_limit": POSITIVE_COUNT,
    **{f"quant.{key}": BITS for key in ("weight_bits", "act_bits", "input_bits", "first_last_bits")},
    "quant.window": Range(1, 64),
    "quant.sigma_init": Range(0.05, 0.5),  # σ/α
    # Above α/2 the default edge window (w ≤ 5, core.srq.default_window) loses accuracy.
    "quant.sigma_max": Range(0.05, 0.5, low_open=True),
    "quant.temperature_start": Range(0.0, low_open=True),
    "quant.temperature_end": Range(0.0, low_open=True),
    "dropbits.rate": Range(0.0, 1.0, high_open=True),  # 1 would drop every level
    "dropbits.anneal_epochs": COUNT,
    "dropbits.bn_reestimate_batches": COUNT,  # 0: skip
    "train.epochs": COUNT,  # 0: calibration only (post-training quantization)
    "train.lr": LEARNING_RATE,
    "train.quant_lr": LEARNING_RATE,
    "train.momentum": Range(0.0, 1.0, high_open=True),
    "train.weight_decay": Range(0.0, 1.0, high_open=True),
    "train.seed": Range(0, 2**32 - 1),  # numpy's seed range
    "train.checkpoint_every": COUNT,  # 0: by time only
    "train.checkpoint_minutes": Range(0.0),  # 0: only steps / epoch ends
}


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, annotation)


def fill_settings(obj: Any, data: dict[str, Any], prefix: str) -> None:
    """Set ``obj``'s dataclass fields from a TOML table, naming any unknown key or wrong type
    (with ``prefix``, e.g. ``"search."``); nested tables fill nested dataclasses."""
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise SrqError(f"unknown recipe key {path!r} (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise SrqError(f"recipe key {path!r} must be a table")
            fill_settings(current, value, f"{path}.")
            continue
        if not _type_ok(value, hints[key]):
            raise SrqError(f"recipe key {path!r} has the wrong type: got {type(value).__name__} "
                           f"{value!r}, expected {_type_name(hints[key])}")
        setattr(obj, key, float(value) if hints[key] is float else value)


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Build and validate a recipe from a (TOML-shaped) dict."""
    if not isinstance(data, dict):
        raise SrqError(f"a recipe must be a table of settings, got {type(data).__name__}")
    recipe = Recipe()
    fill_settings(recipe, data, "")
    return recipe.validate()


def resolve_recipe_path(name_or_path: str) -> Path:
    """A recipe file path, or the name of a built-in recipe (``srq recipes`` lists them)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SrqError(f"recipe not found: {path}")
        return path
    builtin = BUILTIN_RECIPES / f"{name_or_path}.toml"
    if not builtin.is_file():
        known = ", ".join(sorted(p.stem for p in BUILTIN_RECIPES.glob("*.toml")))
        raise SrqError(f"unknown recipe {name_or_path!r}: not a file and not a built-in recipe ({known})")
    return builtin


def load_recipe(name_or_path: str) -> Recipe:
    """Load a recipe from a TOML file or a built-in name."""
    path = resolve_recipe_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SrqError(f"recipe {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise SrqError(f"cannot read recipe {path}: {exc.strerror or exc}") from exc
    if "search" in data:  # a search run's saved recipe (to_toml's search table)
        raise SrqError(f"recipe {path} has a [search] table: replay it with srq search-bits "
                       "--recipe (srq quantize takes no search settings)")
    return recipe_from_dict(data)


def apply_overrides(recipe: Recipe, overrides: dict[str, Any], origin: Path | None = None) -> Recipe:
    """Set dotted keys (``"quant.weight_bits"``) whose value is not ``None``; revalidate.

    ``origin``: the recipe file ``recipe`` was read from. A path it names and no flag replaces
    must exist, and the error says it came from that file (a run's saved recipe outlives
    the data or checkpoint it names).
    """
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split(".")
        setattr(getattr(recipe, section), key, value)
    if origin is not None:
        check_saved_paths(recipe, origin, [k for k in PATH_FLAGS if overrides.get(k) is None])
    return recipe.validate()


#: The recipe keys that hold a path, with the flag that replaces each.
PATH_FLAGS = {"model.checkpoint": "--checkpoint", "data.source": "--data"}


def _paths(recipe: Recipe, keys: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(key, path)`` of the set paths among ``keys`` (the built-in data name is no path)."""
    from srqcli.data import EXAMPLE  # here: the data package is slow to import

    for dotted in keys:
        section, key = dotted.split(".")
        value = getattr(getattr(recipe, section), key)
        if value is not None and not (dotted == "data.source" and value == EXAMPLE):
            yield dotted, value


def with_absolute_paths(recipe: Recipe) -> Recipe:
    """A copy whose checkpoint and data paths are absolute (``~`` expanded, symlinks kept).

    A run saves its recipe (``recipe.toml``, the model file's metadata, the resume state);
    with relative paths ``srq eval RUN`` from another directory would look in the wrong place.
    """
    resolved = copy.deepcopy(recipe)
    for dotted, value in _paths(resolved, PATH_FLAGS):
        section, key = dotted.split(".")
        setattr(getattr(resolved, section), key, os.path.abspath(os.path.expanduser(value)))
    return resolved


def check_saved_paths(recipe: Recipe, origin: Path, keys: Iterable[str] = tuple(PATH_FLAGS), *,
                      fix: str | None = None) -> None:
    """Raise :class:`SrqError` naming ``origin`` when a path among ``keys`` does not exist.

    ``fix`` says what to do; by default, the flag that replaces the path.
    """
    for dotted, value in _paths(recipe, keys):
        if not Path(value).expanduser().exists():
            raise SrqError(f"{dotted} {value} from the recipe in {origin} does not exist (moved?); "
                           f"{fix or f'pass {PATH_FLAGS[dotted]} to use another'}")


def to_toml(recipe: Recipe, search: Any | None = None) -> str:
    """Serialise a recipe as TOML (the subset of types recipes use).

    ``search``, a search run's settings (a dataclass), becomes a ``[search]`` table: with it the
    saved recipe replays the search (``srq search-bits ARCH --recipe RUN/recipe.toml``).
    """
    lines = [f"version = {recipe.version}"]
    sections = [(name, getattr(recipe, name)) for name in ("model", "data", "quant", "dropbits", "train")]
    for section, obj in sections + ([("search", search)] if search is not None else []):
        lines.append(f"\n[{section}]")
        tables: list[str] = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None:
                continue
            if isinstance(value, dict):  # a sub-table (quant.layers, search.pins), after the keys
                if value:
                    tables.append(f"\n[{section}.{f.name}]")
                    tables.extend(f"{json.dumps(key)} = {_toml_value(v)}" for key, v in value.items())
                continue
            lines.append(f"{f.name} = {_toml_value(value)}")
        lines.extend(tables)
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table of bare keys: { weight_bits = 3 }
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
