"""``srq export``: a quantized model to ONNX (qdq or packed layout) or packed safetensors.

Every artifact is written to a temporary file next to its destination, verified there, and
only then renamed into place: an export that fails verification leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from srqcli import __version__
from srqcli.errors import SrqError, short_reason
from srqcli.export.artifacts import load_quantized_source, resolve_source
from srqcli.export.encodings import FrozenModel, freeze_model
from srqcli.export.packing import packed_nbytes
from srqcli.io.atomic import atomic_path
from srqcli.io.quantized import QUANTIZED, ModelInfo
from srqcli.nn.graph import trace
from srqcli.preprocessing import COLOR
from srqcli.report.writer import REPORT_JSON, ReportFiles, write_report

FORMATS = ("onnx", "safetensors")
ONNX_FORMAT = "srq.onnx"
ONNX_FORMAT_VERSION = 1
META_PREFIX = "srq."


@dataclass
class ExportResult:
    path: Path
    format: str
    layout: str | None
    opset: int | None
    bytes: int
    source: Path | None = None
    verify: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    report: ReportFiles | None = None  # the bit-allocation report written next to the artifact, if any

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "layout": self.layout, "opset": self.opset,
                "bytes": self.bytes, "source": str(self.source) if self.source else None, "verify": self.verify,
                "report": str(self.report.json) if self.report else None, **self.details}


@contextlib.contextmanager
def eager_quantizers() -> Iterator[None]:
    """Run the SRQ quantizers eagerly (no ``torch.compile``) inside export.

    Same numbers (compiled and eager forwards are bit-identical, measured on LeNet-5 and
    ResNet-20), no compile time, and no dynamo recompile limit when one process exports many
    different models.
    """
    from srqcli.core import srq

    previous = getattr(srq, "_use_fused", None)
    if previous is None:
        yield
        return
    srq.set_fused(False)
    try:
        yield
    finally:
        srq.set_fused(previous)


def _eager(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with eager_quantizers():
            return fn(*args, **kwargs)
    return wrapper


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------

def default_output(source: Path, fmt: str, layout: str) -> Path:
    stem = source.name[: -len(".safetensors")] if source.name.endswith(".safetensors") else source.stem
    stem = stem.removesuffix(".packed")
    if fmt == "safetensors":
        return source.with_name(f"{stem}.packed.safetensors")
    return source.with_name(f"{stem}.onnx" if layout == "qdq" else f"{stem}.{layout}.onnx")


# --------------------------------------------------------------------------------------------
# verification inputs
# --------------------------------------------------------------------------------------------

def input_shape(info: ModelInfo, batch: int = 2) -> tuple[int, int, int, int]:
    return (batch, info.in_channels, info.image_size, info.image_size)


def verification_batches(info: ModelInfo, data: str | None, batches: int, batch_size: int = 32
                         ) -> tuple[list[torch.Tensor], str]:
    """``batches`` validation batches of ``data``, or standard-normal inputs without data."""
    from srqcli.export.verify import random_batches

    if batches < 1:
        raise SrqError(f"--batches must be at least 1, got {batches}")
    if data is None:
        return random_batches(input_shape(info), batches, batch_size), f"{batches}×{batch_size} random inputs"
    from srqcli.data import DataSpec, load_datasets, make_loaders

    spec = DataSpec(source=data, batch_size=batch_size, **info.data_settings())  # the model's own preprocessing
    bundle = load_datasets(spec)
    bundle.check_fits(info.num_classes, info.in_channels,
                      "pass --data like the model's training data, or no --data (random inputs)")
    _, val = make_loaders(bundle, min(batch_size, len(bundle.train)), 0, seed=0)
    out = []
    for images, _labels in val:
        out.append(images)
        if len(out) >= batches:
            break
    return out, f"{sum(len(b) for b in out)} images of {bundle.description}"


# --------------------------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------------------------

def bit_allocation(frozen: FrozenModel) -> dict[str, Any]:
    """Per-layer bits of the exported layers (schema ``srq.bit_allocation/1``), read from the
    frozen layers' quantizer records.

    Not the records' full JSON: a per-channel model's weight steps would grow the ONNX file by
    ~20 bytes a channel (ResNet-20: 16 KB, past the packed layout's size target), and the
    graph already holds them, folded into its dequantization scales."""
    layers = []
    for fl in frozen.layers.values():
        layers.append({
            "name": fl.name, "type": "Conv2d" if fl.kind == "conv" else "Linear",
            "shape": list(fl.codes.shape), "params": fl.params, "weight_bits": fl.weight.bits,
            "granularity": "per-channel" if fl.weight.per_channel else "per-tensor",
            "act_bits": fl.input.bits, "act_signed": fl.input.signed, "act_step": fl.input.scalar,
            "bn_folded": fl.bn, "packed_bytes": packed_nbytes(fl.params, fl.weight.bits),
        })
    params = sum(entry["params"] for entry in layers)
    bits = sum(entry["params"] * entry["weight_bits"] for entry in layers)
    return {"schema": "srq.bit_allocation/1", "layers": layers,
            "totals": {"quantized_params": params, "avg_weight_bits": bits / params if params else None,
                       "packed_weight_bytes": sum(entry["packed_bytes"] for entry in layers)}}


def onnx_metadata(info: ModelInfo | None, frozen: FrozenModel, layout: str) -> dict[str, str]:
    # not the model file's quantizer records: see bit_allocation
    meta = {f"{META_PREFIX}{k}": v for k, v in info.metadata().items() if k != "encodings"} if info else {}
    meta.update({
        "srq.format": ONNX_FORMAT, "srq.format_version": str(ONNX_FORMAT_VERSION),
        "srq.version": __version__, "srq.layout": layout,
        "srq.bit_allocation": json.dumps(bit_allocation(frozen), separators=(",", ":")),
    })
    if info is not None:
        meta["srq.input"] = json.dumps(input_description(info))
    return meta


def input_description(info: ModelInfo) -> dict[str, Any]:
    """``srq.input``: what a deployment feeds the ONNX graph, and how to prepare images for it
    (resize the shorter side to ``resize_size`` with ``interpolation``, center-crop ``size``,
    convert to ``color``, scale to [0, 1], subtract ``mean`` and divide by ``std`` per channel).
    The preparation keys are absent for models srq trained on in-memory data (IDX, the example),
    or before it recorded them."""
    described: dict[str, Any] = {"name": "input", "layout": "NCHW", "channels": info.in_channels,
                                 "size": info.image_size, "mean": list(info.mean), "std": list(info.std)}
    p = info.preprocessing
    if p is not None:
        described.update({"resize_size": p.resize_size, "interpolation": p.interpolation,
                          "color": COLOR[p.channels]})
    return described


def onnx_model_info(path: str | os.PathLike) -> ModelInfo:
    """The :class:`ModelInfo` stored in an srq ONNX export's metadata."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise SrqError(f"{path} is not a valid ONNX file: {short_reason(exc)}") from exc
    props = {p.key: p.value for p in model.metadata_props}
    if props.get("srq.format") != ONNX_FORMAT:
        raise SrqError(f"{path} is not an srq ONNX export (no srq metadata)")
    if int(props.get("srq.format_version", "0")) > ONNX_FORMAT_VERSION:
        raise SrqError(f"{path} was written by a newer srq; upgrade srq")
    meta = {k[len(META_PREFIX):]: v for k, v in props.items() if k.startswith(META_PREFIX)}
    meta["format"] = QUANTIZED
    return ModelInfo.from_metadata(meta, path)


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------

def calibrate_requant(model: nn.Module, traced, frozen: FrozenModel, layers: list[str],
                      batches: list[torch.Tensor]) -> dict[str, float]:
    """int8 steps for the float outputs of ``layers`` (after their folded BN): MSE-optimal on
    the outputs the PyTorch model produces for ``batches``."""
    from srqcli.core.grid import IntGrid
    from srqcli.nn.quantizer import mse_optimal_step

    modules = dict(model.named_modules())
    samples: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    gen = torch.Generator().manual_seed(0)

    def hook(name: str):
        def record(_m, _args, out):
            flat = out.detach().float().flatten()
            if flat.numel() > 1 << 16:
                flat = flat[torch.randint(flat.numel(), (1 << 16,), generator=gen)]
            samples[name].append(flat)
        return record

    handles = [modules[frozen.bn_folds.get(n, n)].register_forward_hook(hook(n)) for n in layers]
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
    grid = IntGrid(8, True)
    return {n: float(mse_optimal_step(torch.cat(v), grid)) for n, v in samples.items() if v}


@_eager
def onnx_proto(model: nn.Module, shape: tuple[int, ...], *, info: ModelInfo | None = None, layout: str = "qdq",
               opset: int | None = None, requant_batches: list[torch.Tensor] | None = None,
               float_unfused: bool = False):
    """The checked ONNX model of a quantized ``model`` (NCHW ``shape``, any batch size), with
    the builder's stats, the trace, the frozen layers and the ``--requant`` steps (or ``None``).

    One-line :class:`SrqError` when the graph fails ``onnx.checker`` or breaks the x86 pair
    bound. Shared by :func:`export_onnx` and the deploy model :func:`srqcli.deploy.build`, so
    the model srq evaluates is built exactly as the file it writes.
    """
    import onnx

    from srqcli.export.pair_bound import pair_bound_violations
    from srqcli.export.to_onnx import build_onnx, check_opset, output_layer

    opset = check_opset(layout, opset)
    shape = (2, *shape[1:])
    traced = trace(model, shape)
    frozen = freeze_model(model, traced.bn_folds)
    steps = None
    if requant_batches is not None:
        if layout != "qdq":
            raise SrqError("--requant applies to the qdq layout only (packed layers never fuse)")
        _, probe = build_onnx(traced, frozen, layout=layout, opset=opset)
        last = output_layer(traced, frozen)
        targets = [n for n in probe.float_output_layers if last is None or n != last.name]
        steps = calibrate_requant(model, traced, frozen, targets, requant_batches)
    meta = onnx_metadata(info, frozen, layout)
    meta["srq.requantized_outputs"] = json.dumps(steps or {})
    proto, stats = build_onnx(traced, frozen, layout=layout, opset=opset, metadata=meta, requant=steps,
                              float_unfused=float_unfused)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError, shape inference errors
        raise SrqError(f"the exported graph fails onnx.checker ({short_reason(exc)}); please report this") from exc
    violations = pair_bound_violations(proto)
    if violations:  # only models quantized before srq made 8-bit-input layers' weights 7-bit
        raise SrqError(f"cannot export, nothing written: {violations[0].describe()}; quantize the float "
                       "model again with this srq, which trains such layers with 7-bit weights")
    return proto, stats, traced, frozen, steps


@_eager
def export_onnx(model: nn.Module, info: ModelInfo | None, out: str | os.PathLike, *, layout: str = "qdq",
                opset: int | None = None, verify: bool = True,
                batches: list[torch.Tensor] | None = None, inputs: str = "random",
                real_data: bool = False, list_ops: bool = True,
                shape: tuple[int, ...] | None = None, requant: bool = False,
                float_unfused: bool = False) -> ExportResult:
    """Build, check, (verify and) write the ONNX model of a quantized ``model``.

    ``info`` (from the srq model file) supplies the input shape and the metadata; without it
    pass ``shape`` (NCHW; any batch size). ``requant`` adds int8 quantization to the layer
    outputs PyTorch keeps in float (calibrated on ``batches``) so that every layer fuses;
    the export is then no longer exact and is verified by top-1 agreement on real data.
    ``float_unfused`` stores the weights of convs that cannot fuse as float32 (same values,
    still exact; faster in onnxruntime, larger file: :mod:`srqcli.export.to_onnx`).
    """
    import onnx

    from srqcli.export.to_onnx import check_opset, output_step
    from srqcli.export.verify import random_batches, verify_onnx

    opset = check_opset(layout, opset)
    out = Path(out)
    if shape is None:
        if info is None:
            raise ValueError("export_onnx needs info or shape")
        shape = input_shape(info)
    if batches is None:
        batches = random_batches((2, *shape[1:]), 2)
    proto, stats, traced, frozen, steps = onnx_proto(model, shape, info=info, layout=layout, opset=opset,
                                                     requant_batches=batches if requant else None,
                                                     float_unfused=float_unfused)
    report = None
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
        if verify:
            report = verify_onnx(tmp, model, batches, output_step(traced, frozen), inputs=inputs,
                                 real_data=real_data, list_ops=list_ops, exact=not steps)
            if not report.ok:
                raise SrqError(f"verification FAILED, nothing written: onnxruntime disagrees with the "
                               f"PyTorch model ({report.failure()})")
    details = {"fused_candidates": stats.fused_candidates, "float_output_layers": stats.float_output_layers,
               "requantized": stats.requantized, "quantized_outputs": stats.quantized_outputs,
               "weight_types": stats.weight_types}
    return ExportResult(out, "onnx", layout, opset, out.stat().st_size, None,
                        report.to_dict() if report else None, details)


@_eager
def export_safetensors(model: nn.Module, info: ModelInfo, out: str | os.PathLike, *, verify: bool = True,
                       batches: list[torch.Tensor] | None = None) -> ExportResult:
    """Write packed safetensors; verify that the loader gives identical outputs.

    The BN-folded deploy scales/biases need the dataflow graph; a model torch.fx cannot trace
    is still packed, without them.
    """
    from srqcli.export.packed import load_packed, save_packed
    from srqcli.export.verify import random_batches

    out = Path(out)
    try:
        bn_folds = trace(model, input_shape(info)).bn_folds
    except SrqError:
        bn_folds = {}
    with atomic_path(out) as tmp:
        sizes = save_packed(tmp, model, info, bn_folds)
        verify_info = None
        if verify:
            rebuilt, _ = load_packed(tmp)
            batches = batches if batches is not None else random_batches(input_shape(info), 2)
            with torch.no_grad():
                same = all(torch.equal(model(x), rebuilt(x)) for x in batches)
            if not same:
                raise SrqError("verification FAILED, nothing written: the packed file does not "
                               "reproduce the model's outputs exactly; please report this")
            verify_info = {"round_trip_identical": True, "images": sum(len(x) for x in batches)}
    return ExportResult(out, "safetensors", None, None, out.stat().st_size, None, verify_info, sizes)


def run_export(target: str, *, fmt: str = "onnx", layout: str = "qdq", opset: int | None = None,
               out: str | os.PathLike | None = None, data: str | None = None, verify: bool = True,
               batches: int = 4, batch_size: int = 32, requant: bool = False, float_unfused: bool = False,
               console: Console | None = None) -> ExportResult:
    """``srq export``: load ``target``, export it and verify the artifact before writing it."""
    from srqcli.export.to_onnx import LAYOUTS, check_opset

    if fmt not in FORMATS:
        raise SrqError(f"unknown export format {fmt!r}; use {' or '.join(FORMATS)}")
    if fmt == "onnx":
        check_opset(layout, opset)  # fail before loading anything
    elif layout not in LAYOUTS:
        raise SrqError(f"unknown layout {layout!r}; use {' or '.join(LAYOUTS)}")
    elif opset is not None:
        raise SrqError("--opset applies to --format onnx only")
    for flag, on in (("--requant", requant), ("--float-unfused", float_unfused)):
        if on and (fmt != "onnx" or layout != "qdq"):
            raise SrqError(f"{flag} applies to --format onnx --layout qdq only")
    source = resolve_source(target)
    model, info = load_quantized_source(source)  # first: what the source is decides the message
    dest = Path(out) if out is not None else default_output(source, fmt, layout)
    if dest.exists() and dest.resolve() == source.resolve():
        given = f"--out {dest}" if out is not None else f"the default output {dest}"
        raise SrqError(f"{given} is the model being exported; pass --out with another file name")
    if dest.is_dir():
        raise SrqError(f"--out {dest} is a folder; pass a file name")
    model = model.cpu().eval()
    vb, desc = verification_batches(info, data, batches, batch_size) if verify or requant else (None, "")
    if console is not None and verify:
        console.print(f"verifying on {desc}", highlight=False)
    if fmt == "onnx":
        res = export_onnx(model, info, dest, layout=layout, opset=opset, verify=verify, batches=vb, inputs=desc,
                          real_data=data is not None, requant=requant, float_unfused=float_unfused)
    else:
        res = export_safetensors(model, info, dest, verify=verify, batches=vb)
    res.source = source
    res.report = report_beside(model, info, dest)
    return res


def report_beside(model: nn.Module, info: ModelInfo, dest: Path) -> ReportFiles | None:
    """Write the bit-allocation report next to an artifact exported into a folder that has none.

    A folder with a report keeps it untouched: a run folder's report holds the run's
    accuracies, which an export does not know, and exporting the same model again must not
    rewrite files that did not change.
    """
    if (dest.parent / REPORT_JSON).exists():
        return None
    return write_report(model, dest.parent, info=info, source=str(dest))

