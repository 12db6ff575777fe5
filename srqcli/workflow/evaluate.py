"""``srq eval``: accuracy of a float model, an srq checkpoint or a run directory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from torch import nn

from srqcli.config import check_saved_paths
from srqcli.data import DataSpec, load_datasets, make_loaders
from srqcli.errors import SrqError
from srqcli.io.checkpoint import load_into, read_state_dict
from srqcli.io.quantized import ModelInfo, srq_format
from srqcli.models import build_model
from srqcli.models.user import is_import_path
from srqcli.preprocessing import CHANNELS, FLAGS, IMAGEFOLDER_ONLY
from srqcli.train.loop import EvalMetrics, evaluate, resolve_device
from srqcli.train.progress import Reporter
from srqcli.workflow import rundir
from srqcli.workflow.deployed import evaluate_deployed
from srqcli.workflow.model_source import resolve_model, user_code


@dataclass
class EvalResult:
    target: str
    kind: str  # "float" | "quantized" | "onnx"
    data: str
    metrics: EvalMetrics
    deployed: EvalMetrics | None = None  # a quantized model's exported file (srqcli.deploy)
    undeployable: str | None = None  # why a quantized model has no deploy model


def resolve_target(target: str) -> Path | None:
    """A run directory or srq model file, or ``None`` for an architecture name."""
    path = Path(target)
    if path.is_dir():
        model = path / rundir.MODEL
        if not model.is_file():
            raise SrqError(f"{path} is not an srq run folder ({rundir.MODEL} not found)")
        return model
    if path.suffix in (".safetensors", ".onnx") or path.exists():
        if not path.is_file():
            raise SrqError(f"model file not found: {path}")
        return path
    return None


def load_target(target: str, path: Path | None, *, checkpoint: str | None,
                num_classes: int | None, in_channels: int, trust_pickle: bool,
                data_classes: int) -> tuple[nn.Module, str]:
    """Build the model to evaluate (``path`` from :func:`resolve_target`) and say its kind."""
    if path is not None:
        from srqcli.export.artifacts import (
            load_any,  # also .onnx exports and packed .safetensors
        )

        model, _info, kind = load_any(path)
        return model, kind
    model = build_model(target, num_classes or data_classes, in_channels)
    if checkpoint:
        load_into(model, read_state_dict(checkpoint, trust_pickle=trust_pickle), arch=target)
    else:
        what = "code that builds a model" if is_import_path(target) else "an architecture name"
        raise SrqError(f"{target!r} is {what}: pass its weights with --checkpoint")
    return model, "float"


def run_eval(target: str, *, data: str | None, checkpoint: str | None = None,
             num_classes: int | None = None, batch_size: int = 256, workers: int = 0,
             device: str = "auto", trust_pickle: bool = False, strict: bool = False,
             console: Console | None = None, show_progress: bool = True,
             arch: str | None = None, preprocessing: Mapping[str, Any] | None = None) -> EvalResult:
    """Evaluate ``target`` on the held-out split of ``data`` (defaults to the run's data).

    A weights file srq did not write (a state_dict, TorchScript or torch.export file) is the
    float model it holds: its architecture comes from ``arch`` or from the file
    (:mod:`srqcli.workflow.model_source`); user code (``package.module:Class``) is imported.
    An srq file of a run built from user code takes that code's import path as ``arch``.
    Images are prepared as the model file says (its saved preprocessing); ``preprocessing``, the
    settings the user gave (:data:`~srqcli.preprocessing.FIELDS` → value, ``None``: unset),
    replaces those values, and is the only source for a float weights file, whose ImageFolder
    images otherwise take the file's input channels and the defaults.
    """
    console = console or Console(stderr=True)
    path = resolve_target(target)
    settings: dict[str, Any] = {}
    if (path is not None and path.suffix.lower() != ".onnx" and srq_format(path) is None) or (
            path is None and is_import_path(target)):
        source = resolve_model(str(path or target), checkpoint=checkpoint, arch=arch,
                               trust_pickle=trust_pickle)
        if source.note:
            console.print(source.note, highlight=False, soft_wrap=True)
        target, path, checkpoint = source.arch, None, source.checkpoint
        num_classes = num_classes or source.num_classes
        if source.in_channels in CHANNELS:
            settings["channels"] = source.in_channels
    elif arch is not None and is_import_path(arch) and path is not None:
        console.print(user_code(arch), highlight=False, soft_wrap=True)
    elif arch is not None:
        raise SrqError("--arch names the architecture of a plain weights file (or, for a run "
                       f"built from user code, its package.module:Class); {target} names its own")
    info: ModelInfo | None = None
    if path is not None and path.suffix in (".safetensors", ".onnx"):
        from srqcli.export.artifacts import read_info

        info = read_info(path)
        if arch is not None and info.arch != arch.strip():
            raise SrqError(f"{path} is a model of {info.arch}, not of {arch}: drop --arch")
    if data is None and info is not None:
        check_saved_paths(info.recipe, path, ["data.source"])
    source = data or (info.recipe.data.source if info else None)
    if source is None:
        raise SrqError("pass --data DIR (an ImageFolder or IDX folder, or 'example')")
    typed = {key: value for key, value in (preprocessing or {}).items() if value is not None}
    settings.update(info.data_settings() if info else {}, **typed)
    bundle = load_datasets(DataSpec(source=source, batch_size=batch_size, workers=workers, strict=strict,
                                    **settings))
    bundle.refuse_preprocessing([FLAGS[key] for key in IMAGEFOLDER_ONLY if key in typed])
    if info:
        bundle.check_fits(info.num_classes, info.in_channels,
                          f"pass --data like the model's training data ({info.recipe.data.source})")
    if bundle.preprocessing is not None:
        console.print(f"[dim]preprocessing:[/] {bundle.preprocessing.describe()}", highlight=False)
    dev = resolve_device(device)
    model, kind = load_target(target, path, checkpoint=checkpoint, num_classes=num_classes,
                              in_channels=bundle.in_channels, trust_pickle=trust_pickle,
                              data_classes=bundle.num_classes)
    if kind == "onnx":
        from srqcli.export.pair_bound import pair_bound_warning

        warning = pair_bound_warning(path)
        if warning:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    _, val_loader = make_loaders(bundle, min(batch_size, len(bundle.train)), workers, seed=0)
    with Reporter(console, enabled=show_progress) as reporter:
        metrics = evaluate(model.to(dev), val_loader, dev, reporter=reporter, label="eval")
        deployed = undeployable = None
        if kind == "quantized" and info is not None:
            deployed, undeployable = evaluate_deployed(model, info, val_loader, reporter)
    return EvalResult(target, kind, bundle.description, metrics, deployed, undeployable)
