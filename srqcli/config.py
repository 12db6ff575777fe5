"""Typed run configuration ("recipe"), loaded from TOML and overridable from the CLI.

A recipe holds every setting of a run. It is versioned, validated strictly (an unknown key or a
wrong type is an error naming the key, so a typo never silently falls back to a default) and
saved, fully resolved, next to every output so a run can be replayed with
``srq quantize --recipe RUN/recipe.toml``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from srqcli.core.grid import MAX_BITS, MIN_BITS
from srqcli.core.names import PI_MODES, VARIANTS
from srqcli.errors import SrqError
from srqcli.methods.names import METHODS

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


@dataclass
class QuantConfig:
    method: str = "srq"  # srq | rq | lsq | ste | slb | dq (srqcli/methods)
    weight_bits: int = 4
    act_bits: int = 4
    input_bits: int = 8  # the network input
    output_bits: int | None = None  # quantize float-read layer outputs too (srqcli/nn/output_quant.py)
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
        """Check value ranges; raises :class:`SrqError` naming the offending key."""
        q = self.quant
        for key in ("weight_bits", "act_bits", "input_bits", "first_last_bits", "output_bits"):
            _check_bits(f"quant.{key}", getattr(q, key))
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
                _check_bits(f"quant.layers.{pattern!r}.{key}", value)
        if q.pi_mode not in PI_MODES:
            raise SrqError(f"quant.pi_mode must be one of {', '.join(PI_MODES)}, got {q.pi_mode!r}")
        if q.window is not None and not 1 <= q.window <= 64:
            raise SrqError(f"quant.window must be in 1..64, got {q.window}")
        if not 0.05 <= q.sigma_init <= 0.5:
            raise SrqError(f"quant.sigma_init must be in [0.05, 0.5] (σ/α), got {q.sigma_init}")
        # Above α/2 the default edge window (w ≤ 5, core.srq.default_window) loses accuracy.
        if not 0.05 < q.sigma_max <= 0.5 or q.sigma_max < q.sigma_init:
            raise SrqError(f"quant.sigma_max must be in (0.05, 0.5] and at least quant.sigma_init "
                           f"({q.sigma_init}), got {q.sigma_max}")
        if q.method not in METHODS:
            raise SrqError(f"quant.method must be one of {', '.join(METHODS)}, got {q.method!r}")
        for key in ("temperature_start", "temperature_end"):
            if getattr(q, key) is not None and not getattr(q, key) > 0:
                raise SrqError(f"quant.{key} must be positive, got {getattr(q, key)}")
        if q.method == "dq" and q.per_channel:
            raise SrqError("quant.per_channel is not supported with method dq (one level set per tensor)")
        d = self.dropbits
        if d.variant not in ("none", *VARIANTS):
            raise SrqError(f"dropbits.variant must be one of none, {', '.join(VARIANTS)}, got {d.variant!r}")
        if q.method != "srq" and d.variant != "none":
            raise SrqError(f"DropBits is part of SRQ: with quant.method = {q.method!r} set "
                           "dropbits.variant = \"none\" (--no-dropbits)")
        if not 0.0 <= d.rate < 1.0:
            raise SrqError(f"dropbits.rate must be in [0, 1), got {d.rate}")
        t = self.train
        if t.optimizer not in ("adam", "sgd"):
            raise SrqError(f"train.optimizer must be adam or sgd, got {t.optimizer!r}")
        if t.schedule not in ("cosine", "constant"):
            raise SrqError(f"train.schedule must be cosine or constant, got {t.schedule!r}")
        if t.device not in ("auto", "cpu", "cuda"):
            raise SrqError(f"train.device must be auto, cpu or cuda, got {t.device!r}")
        if t.checkpoint_every < 0 or t.checkpoint_minutes < 0:
            raise SrqError("train.checkpoint_every and train.checkpoint_minutes must not be negative "
                           "(0 turns either off)")
        for key, value in (("train.epochs", t.epochs), ("data.batch_size", self.data.batch_size),
                           ("data.calib_batches", self.data.calib_batches)):
            if value < (0 if key == "train.epochs" else 1):
                raise SrqError(f"{key} must be positive, got {value}")
        if self.version != RECIPE_VERSION:
            raise SrqError(f"recipe version {self.version} is not supported (this srq reads version {RECIPE_VERSION})")
        return self


def _check_bits(key: str, value: int | None) -> None:
    if value is not None and not MIN_BITS <= value <= MAX_BITS:
        raise SrqError(f"{key} must be between {MIN_BITS} and {MAX_BITS} bits, got {value}")


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


def _fill(obj: Any, data: dict[str, Any], prefix: str) -> None:
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
            _fill(current, value, f"{path}.")
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
    _fill(recipe, data, "")
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
    return recipe_from_dict(data)


def apply_overrides(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """Set dotted keys (``"quant.weight_bits"``) whose value is not ``None``; revalidate."""
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split(".")
        setattr(getattr(recipe, section), key, value)
    return recipe.validate()


def to_toml(recipe: Recipe) -> str:
    """Serialise a recipe as TOML (the subset of types recipes use)."""
    lines = [f"version = {recipe.version}"]
    for section in ("model", "data", "quant", "dropbits", "train"):
        obj = getattr(recipe, section)
        lines.append(f"\n[{section}]")
        tables: list[str] = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None:
                continue
            if isinstance(value, dict):
                for pattern, bits in value.items():
                    inner = ", ".join(f"{k} = {v}" for k, v in bits.items())
                    tables.append(f"{json.dumps(pattern)} = {{ {inner} }}")
                continue
            lines.append(f"{f.name} = {_toml_value(value)}")
        if tables:
            lines.append(f"\n[{section}.layers]")
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
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
