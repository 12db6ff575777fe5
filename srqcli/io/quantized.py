"""srq's own model files: quantized checkpoints and float snapshots, as safetensors.

Both are plain tensors plus JSON metadata, so loading them never unpickles anything. The
metadata says everything needed to rebuild the module tree: architecture, classes, input
channels and size, the resolved recipe and, for quantized files, the per-layer bit plan; and
how inputs are prepared (``normalization``; ``preprocessing``, the whole transform of a model
trained on ImageFolder data, absent from files written before srq recorded it).

Format (``format = "srq.quantized"`` or ``"srq.float"``, ``format_version = 1``): tensor names
are the model's ``state_dict`` keys; the quantizers add ``<layer>.weight_quant.log_alpha``,
``log_sigma``, ``initialized``, ``signed_flag`` (and the same under ``input_quant``).
A quantized file's metadata also holds ``encodings``, the frozen record of every quantizer
(``{layer: {weight, input[, output]: {bits, signed, step, axis}}}``,
:mod:`srqcli.core.encoding`), so bits and steps can be read without rebuilding the training
quantizers; files written before srq stored it have none (an optional key: no version change).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from srqcli import __version__
from srqcli.config import Recipe, recipe_from_dict
from srqcli.core.encoding import Encoding, layers_from_dict, layers_to_dict
from srqcli.errors import SrqError, short_reason
from srqcli.io.atomic import save_safetensors_atomic
from srqcli.models import build_model, check_input_size
from srqcli.nn.encodings import model_encodings
from srqcli.nn.surgery import LayerBits, rebuild_quantized
from srqcli.preprocessing import Preprocessing

FORMAT_VERSION = 1
QUANTIZED = "srq.quantized"
FLOAT = "srq.float"


@dataclass
class ModelInfo:
    """What is needed to rebuild a model, stored in every srq model file."""

    arch: str
    num_classes: int
    in_channels: int
    image_size: int
    recipe: Recipe
    plan: list[LayerBits] = field(default_factory=list)  # empty for float files
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)
    preprocessing: Preprocessing | None = None  # ImageFolder models (older files: None)
    #: the trained quantizers' records (:mod:`srqcli.core.encoding`); None before training
    #: and in files written before srq stored them
    encodings: dict[str, dict[str, Encoding]] | None = None

    @property
    def quantized(self) -> bool:
        return bool(self.plan)

    def metadata(self) -> dict[str, str]:
        return {
            "format": QUANTIZED if self.quantized else FLOAT,
            "format_version": str(FORMAT_VERSION),
            "srq_version": __version__,
            "arch": self.arch,
            "num_classes": str(self.num_classes),
            "in_channels": str(self.in_channels),
            "image_size": str(self.image_size),
            "recipe": self.recipe.to_json(),
            "plan": json.dumps([asdict(p) for p in self.plan]),
            "normalization": json.dumps({"mean": list(self.mean), "std": list(self.std)}),
            "metrics": json.dumps(self.metrics),
            **({"preprocessing": json.dumps(self.preprocessing.to_dict())} if self.preprocessing else {}),
            **({"encodings": json.dumps(layers_to_dict(self.encodings), separators=(",", ":"))}
               if self.encodings is not None else {}),
        }

    def with_encodings(self, model: nn.Module) -> ModelInfo:
        """A copy holding ``model``'s quantizer records (a float model's info unchanged)."""
        return dataclasses.replace(self, encodings=model_encodings(model)) if self.quantized else self

    def data_settings(self) -> dict[str, Any]:
        """The :class:`~srqcli.data.DataSpec` keywords that prepare data as this model expects:
        its saved preprocessing or, in a file without one, its input size and the recipe's
        resize size (all that srq used to record; the rest was always the default)."""
        p = self.preprocessing
        if p is None:
            return {"image_size": self.image_size, "resize_size": self.recipe.data.resize_size}
        return {"image_size": p.image_size, "resize_size": p.resize_size, "mean": p.mean,
                "std": p.std, "channels": p.channels, "interpolation": p.interpolation}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], path: Path) -> ModelInfo:
        if meta.get("format") not in (QUANTIZED, FLOAT):
            raise SrqError(f"{path} is not an srq model file (no srq metadata); for float weights "
                           "pass an architecture name and --checkpoint")
        if _int(meta.get("format_version", "0"), "format_version", path) > FORMAT_VERSION:
            raise SrqError(f"{path} was written by a newer srq (format {meta['format_version']}); upgrade srq")
        try:
            norm = json.loads(meta.get("normalization", "{}"))
            info = cls(
                arch=meta["arch"], num_classes=int(meta["num_classes"]),
                in_channels=int(meta["in_channels"]), image_size=int(meta["image_size"]),
                recipe=recipe_from_dict(json.loads(meta["recipe"])),
                plan=[LayerBits(**p) for p in json.loads(meta["plan"])],
                mean=tuple(norm.get("mean", ())), std=tuple(norm.get("std", ())),
                metrics=json.loads(meta.get("metrics", "{}")),
            )
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise _damaged(path, f"{type(exc).__name__}: {short_reason(exc)}") from exc
        except SrqError as exc:  # the stored recipe fails validation
            raise _damaged(path, f"recipe: {exc}") from exc
        if "preprocessing" in meta:
            try:
                info.preprocessing = Preprocessing.from_dict(json.loads(meta["preprocessing"]))
            except (ValueError, SrqError) as exc:
                raise _damaged(path, f"preprocessing: {short_reason(exc)}") from exc
        if "encodings" in meta:
            try:
                info.encodings = layers_from_dict(json.loads(meta["encodings"]))
            except ValueError as exc:
                raise _damaged(path, f"encodings: {short_reason(exc)}") from exc
        for key in ("num_classes", "in_channels", "image_size"):
            if getattr(info, key) < 1:
                raise _damaged(path, f"{key} = {getattr(info, key)}")
        return info


def _damaged(path: Path, detail: str) -> SrqError:
    return SrqError(f"{path} has damaged srq metadata ({detail})")


def _int(value: str, key: str, path: Path) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise _damaged(path, f"{key} = {value!r}") from exc


def save_model(path: str | os.PathLike, model: nn.Module, info: ModelInfo) -> None:
    """Write ``model``'s tensors and ``info`` (with the model's quantizer records) atomically as
    safetensors."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_safetensors_atomic(tensors, path, info.with_encodings(model).metadata())


def safetensors_format(path: str | os.PathLike) -> str | None:
    """The ``format`` entry of a safetensors file's metadata; one-line :class:`SrqError` when the
    file is not valid safetensors."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format")
    except (SafetensorError, OSError, ValueError) as exc:
        raise SrqError(f"{path} is not a valid safetensors file: {short_reason(exc)}") from exc


def srq_format(path: str | os.PathLike) -> str | None:
    """The srq file format (``srq.quantized``, ``srq.float``, ``srq.packed``) of a safetensors
    file, or ``None`` for any other file. Damaged or foreign files answer ``None``: the caller's
    ordinary loader reports them."""
    p = Path(path)
    if p.suffix.lower() != ".safetensors" or not p.is_file():
        return None
    try:
        fmt = safetensors_format(p)
    except SrqError:
        return None
    return fmt if isinstance(fmt, str) and fmt.startswith("srq.") else None


def is_quantized_model_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an srq *quantized* model file (safetensors with srq metadata)."""
    return srq_format(path) == QUANTIZED


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """Read only the metadata of an srq model file."""
    path = Path(path)
    _check_file(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise SrqError(f"{path} is not a valid safetensors file: {short_reason(exc)}") from exc
    return ModelInfo.from_metadata(meta, path)


def load_model(path: str | os.PathLike) -> tuple[nn.Module, ModelInfo]:
    """Rebuild the model stored in an srq model file (quantized or float), in eval mode."""
    path = Path(path)
    info = read_model_info(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SrqError(f"{path} is not a valid safetensors file: {short_reason(exc)}") from exc
    model = build_model(info.arch, info.num_classes, info.in_channels)
    try:
        check_input_size(model, info.in_channels, info.image_size)
    except SrqError as exc:
        raise _damaged(path, f"image_size: {exc}") from exc
    if info.quantized:
        rebuild_quantized(model, info.plan, info.recipe.quant)
    missing, unexpected = _diff_keys(model, tensors)
    if missing or unexpected:
        raise SrqError(f"{path} does not match its own metadata ({len(missing)} missing, "
                       f"{len(unexpected)} unexpected tensors, e.g. {(missing + unexpected)[0]}): "
                       "the file is damaged")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise SrqError(f"{path} is damaged: tensor shapes do not match its metadata") from exc
    check_encodings(model, info, path)
    return model.eval(), info


def check_encodings(model: nn.Module, info: ModelInfo, path: Path) -> None:
    """Refuse a file whose stored quantizer records disagree with the quantizers it rebuilds."""
    if info.encodings is None:
        return
    found = model_encodings(model)
    for name in {**info.encodings, **found}:
        if info.encodings.get(name) != found.get(name):
            raise _damaged(path, f"encodings: layer {name} does not match its quantizers")


def _diff_keys(model: nn.Module, tensors: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(tensors)), sorted(set(tensors) - expected)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise SrqError(f"model file not found: {path}")
    if not path.is_file():
        raise SrqError(f"{path} is not a file")

