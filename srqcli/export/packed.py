"""Packed safetensors: integer codes at their true width, plus a loader (docs/method.md §7).

Format ``srq.packed``, version 2. Tensors, for every quantized layer ``L``:

``L.weight.packed``  uint8, the weight codes bit-packed at the layer's width ``b`` (2–8):
                     offset binary ``u = k − k_min`` (``k_min = −2^(b−1)``), elements in C order
                     of the weight shape, little-endian bit stream (:mod:`srqcli.export.packing`).
``L.deploy.scale``   float32 ``[C_out]``, only when a BatchNorm directly follows ``L``: the
``L.deploy.bias``    BN folded exactly, ``y = conv(x̂, k)·scale_c + bias_c`` with the *stored*
                     codes (``scale_c`` is negative where the BN's ``γ_c`` is).

Every other tensor of the model's ``state_dict`` (biases, BatchNorm parameters and statistics,
layers left float) is stored unchanged in float; the quantizers' trained ``log σ`` (which
only shapes training gradients) and BN batch counters are not stored.

Metadata: the keys of an ``srq.quantized`` file (architecture, classes, input size, recipe,
bit plan, normalisation, metrics, and ``encodings``: every quantizer's record ``{bits, signed,
step, axis}`` under ``weight``, ``input`` and, with ``--output-bits``, ``output``, steps exact
float32 as JSON numbers; see :mod:`srqcli.io.quantized`) with ``format = "srq.packed"``, plus
``packed_format_version`` and ``layers``: JSON ``{L: {type, shape, packing, bn}}``. So
``w = step·k`` (per output channel when ``axis`` is 0), and an input is quantized as
``step·clamp(round(x/step), k_min, k_max)``.

Version 1 files (steps as ``L.weight.step``/``L.input.step``/``L.output.step`` tensors, bits
and signedness in ``layers``) still load.

The loader rebuilds the srq model (same module classes as a quantize run) with
``w = fl32(α·k)`` and ``exp(log α) == α`` bit for bit, so its outputs are *identical* to the
model that was exported.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from srqcli import __version__
from srqcli.core.encoding import Encoding
from srqcli.errors import SrqError, short_reason
from srqcli.export.bn_fold import fold_batchnorm
from srqcli.export.encodings import channel_steps, weight_codes
from srqcli.export.packing import pack_bits, packed_nbytes, unpack_bits
from srqcli.io.atomic import save_safetensors_atomic
from srqcli.io.quantized import QUANTIZED, ModelInfo
from srqcli.models import build_model
from srqcli.nn.layers import is_quant_layer
from srqcli.nn.output_quant import output_quantizer
from srqcli.nn.surgery import quant_layers, rebuild_quantized

PACKED = "srq.packed"
PACKED_VERSION = 2
PACKING = "offset-binary, little-endian bit stream"
_QUANTIZERS = ("weight_quant", "input_quant", "output_quant")


def packed_metadata(path: str | os.PathLike) -> dict[str, str] | None:
    """The metadata of a safetensors file, or ``None`` when it is not ``srq.packed``."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise SrqError(f"{path} is not a valid safetensors file: {short_reason(exc)}") from exc
    return meta if meta.get("format") == PACKED else None


def save_packed(path: str | os.PathLike, model: nn.Module, info: ModelInfo,
                bn_folds: dict[str, str] | None = None) -> dict[str, int]:
    """Write ``model`` as packed safetensors (atomically); returns byte counts for the report.

    ``bn_folds`` (layer → BatchNorm, from :func:`srqcli.nn.graph.find_bn_folds`) adds the
    BN-folded deploy scale and bias of those layers.
    """
    bn_folds = bn_folds or {}
    modules = dict(model.named_modules())
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tensors: dict[str, Tensor] = {}
    layers: dict[str, dict] = {}
    packed_bytes = 0
    for name, layer in quant_layers(model):
        codes, weight = weight_codes(layer)
        grid = weight.grid
        raw = pack_bits((codes.to(torch.int64) - grid.kmin).numpy(), grid.bits)
        tensors[f"{name}.weight.packed"] = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
        packed_bytes += len(raw)
        bn = bn_folds.get(name)
        if bn:
            scale, bias = fold_batchnorm(channel_steps(weight, codes.shape[0]), layer.bias, modules[bn])
            tensors[f"{name}.deploy.scale"] = scale.float()
            tensors[f"{name}.deploy.bias"] = bias.float()
        layers[name] = {"type": type(layer).__bases__[0].__name__, "shape": list(codes.shape),
                        "packing": PACKING, "bn": bn}
        for key in list(state):
            if key == f"{name}.weight" or key.startswith(tuple(f"{name}.{q}." for q in _QUANTIZERS)):
                del state[key]
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        tensors[key] = value.contiguous()
    meta = info.with_encodings(model).metadata()
    meta.update({"format": PACKED, "packed_format_version": str(PACKED_VERSION),
                 "srq_version": __version__, "layers": json.dumps(layers)})
    save_safetensors_atomic(tensors, path, meta)
    float_bytes = sum(t.numel() * t.element_size() for k, t in tensors.items() if not k.endswith(".weight.packed"))
    return {"packed_weight_bytes": packed_bytes, "other_bytes": float_bytes}


def _exact_log(alpha: Tensor) -> Tensor:
    """``l`` with ``exp(l) == alpha`` bit for bit (float32), found next to ``log(alpha)``."""
    l = alpha.log()
    ok = l.exp() == alpha
    up, down = l.clone(), l.clone()
    for _ in range(64):
        if bool(ok.all()):
            break
        up = torch.nextafter(up, torch.full_like(up, float("inf")))
        down = torch.nextafter(down, torch.full_like(down, float("-inf")))
        for cand in (up, down):
            hit = ~ok & (cand.exp() == alpha)
            l = torch.where(hit, cand, l)
            ok = ok | hit
    return l


def _version(meta: dict[str, str], path: Path) -> int:
    try:
        version = int(meta.get("packed_format_version", "0"))
    except ValueError as exc:
        raise SrqError(f"{path} has damaged srq metadata (packed_format_version)") from exc
    if version > PACKED_VERSION:
        raise SrqError(f"{path} was written by a newer srq (packed format {version}); upgrade srq")
    if version < 1:
        raise SrqError(f"{path} has damaged srq metadata (packed_format_version {version})")
    return version


def _info(meta: dict[str, str], path: Path) -> ModelInfo:
    _version(meta, path)
    return ModelInfo.from_metadata({**meta, "format": QUANTIZED}, path)


def _v1_encodings(layers: dict, tensors: dict[str, Tensor]) -> dict[str, dict[str, Encoding]]:
    """The quantizer records of a version-1 file: steps in tensors, bits in ``layers``."""
    def record(bits: int, signed: bool, step: Tensor) -> Encoding:
        return Encoding(int(bits), bool(signed), step, 0 if step.dim() else None)

    found = {}
    for name, spec in layers.items():
        found[name] = {"weight": record(spec["bits"], True, tensors[f"{name}.weight.step"]),
                       "input": record(spec["act_bits"], spec["act_signed"], tensors[f"{name}.input.step"])}
        if "output_bits" in spec:
            found[name]["output"] = record(spec["output_bits"], spec["output_signed"],
                                           tensors[f"{name}.output.step"])
    return found


def read_packed_info(path: str | os.PathLike) -> ModelInfo:
    path = Path(path)
    meta = packed_metadata(path)
    if meta is None:
        raise SrqError(f"{path} is not an srq packed file")
    return _info(meta, path)


def load_packed(path: str | os.PathLike) -> tuple[nn.Module, ModelInfo]:
    """Rebuild the quantized PyTorch model stored in an ``srq.packed`` file (eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise SrqError(f"model file not found: {path}")
    meta = packed_metadata(path)
    if meta is None:
        raise SrqError(f"{path} is not an srq packed file")
    info = _info(meta, path)
    try:
        layers = json.loads(meta["layers"])
        tensors = load_file(str(path))
        encodings = info.encodings if _version(meta, path) > 1 else _v1_encodings(layers, tensors)
        if encodings is None:
            raise KeyError("encodings")
    except (KeyError, ValueError, TypeError) as exc:
        raise SrqError(f"{path} has damaged srq metadata ({short_reason(exc)})") from exc
    except (SafetensorError, OSError) as exc:
        raise SrqError(f"{path} is not a valid safetensors file: {short_reason(exc)}") from exc
    model = build_model(info.arch, info.num_classes, info.in_channels)
    # The file holds the deployed network (codes on a uniform grid), whatever method trained
    # it; SRQ's quantizers compute exactly that at inference (round-to-nearest and clip).
    rebuild_quantized(model, info.plan, dataclasses.replace(info.recipe.quant, method="srq"))
    state = {k: v for k, v in model.state_dict().items()}
    modules = dict(model.named_modules())
    try:
        for name, spec in layers.items():
            layer = modules.get(name)
            if layer is None or not is_quant_layer(layer):
                raise SrqError(f"{path} is damaged: layer {name} does not exist in {info.arch}")
            if name not in encodings:
                raise SrqError(f"{path} is damaged: no encodings for layer {name}")
            state.update(_layer_state(name, spec, layer, tensors, encodings[name]))
        for key, value in tensors.items():
            if key.endswith((".weight.packed", ".weight.step", ".input.step", ".output.step", ".deploy.scale",
                             ".deploy.bias")):
                continue
            if key not in state:
                raise SrqError(f"{path} is damaged: unexpected tensor {key}")
            state[key] = value
        model.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise SrqError(f"{path} is damaged: {short_reason(exc)}") from exc
    missing = [name for name, _ in quant_layers(model) if name not in layers]
    if missing:
        raise SrqError(f"{path} is damaged: no codes for layer {missing[0]}")
    return model.eval(), info


def _layer_state(name: str, spec: dict, layer: nn.Module, tensors: dict[str, Tensor],
                 records: dict[str, Encoding]) -> dict[str, Tensor]:
    """The state of one quantized layer rebuilt from its packed codes and quantizer records."""
    weight, shape = records["weight"], tuple(spec["shape"])
    bits = weight.bits
    if tuple(layer.weight.shape) != shape or bits != layer.weight_quant.bits or not weight.signed:
        raise ValueError(f"layer {name}: stored shape/bits {shape}/{bits} do not match the model")
    count = int(np.prod(shape))
    raw = tensors[f"{name}.weight.packed"].numpy()
    if raw.size != packed_nbytes(count, bits):
        raise ValueError(f"layer {name}: {raw.size} packed bytes, expected {packed_nbytes(count, bits)}")
    kmin = -(1 << (bits - 1))
    codes = torch.from_numpy(unpack_bits(raw, bits, count) + kmin).reshape(shape).float()
    oq = output_quantizer(layer)
    out = records.get("output")
    if (oq is None) != (out is None):
        raise ValueError(f"layer {name}: the stored output quantizer does not match the bit plan")
    quantizers = [("weight_quant", layer.weight_quant, weight),
                  ("input_quant", layer.input_quant, records["input"])]
    if oq is not None and out is not None:
        quantizers.append(("output_quant", oq, out))
    state = {}
    for prefix, q, enc in quantizers:
        if enc.bits != q.bits:
            raise ValueError(f"layer {name}: the stored {prefix} has {enc.bits} bits, the bit plan {q.bits}")
        step = enc.step.reshape(q.log_alpha.shape)
        if not (torch.isfinite(step).all() and (step > 0).all()):
            raise ValueError(f"layer {name}: steps must be positive")
        state[f"{name}.{prefix}.log_alpha"] = _exact_log(step)
        state[f"{name}.{prefix}.log_sigma"] = (step * q.sigma_init).log()
        state[f"{name}.{prefix}.initialized"] = torch.tensor(True)
        state[f"{name}.{prefix}.signed_flag"] = torch.tensor(enc.signed)
    state[f"{name}.weight"] = codes * weight.step.reshape(layer.weight_quant.log_alpha.shape)
    return state
