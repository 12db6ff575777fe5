"""Open exported artifacts like srq model files: ``.onnx`` exports and packed ``.safetensors``.

``srq eval`` uses :func:`read_info` and :func:`load_any` so an artifact is evaluated exactly
like a checkpoint: an ONNX export runs in onnxruntime (default optimisation level, i.e. the
integer kernels a deployment gets) behind an ``nn.Module`` facade; a packed file is rebuilt
into the PyTorch model it came from. ``srq export`` and ``srq report``, which need the PyTorch
model itself, read their source with :func:`resolve_source` and :func:`load_quantized_source`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from srqcli.errors import SrqError, short_reason
from srqcli.io.quantized import FLOAT, QUANTIZED, ModelInfo, load_model, read_model_info, safetensors_format
from srqcli.workflow.rundir import MODEL as RUN_MODEL


class OnnxModule(nn.Module):
    """An onnxruntime session that looks like an eval-mode classifier (CPU, any batch size)."""

    def __init__(self, path: str | os.PathLike, level: str = "default", threads: int = 0) -> None:
        super().__init__()
        from srqcli.export.verify import ort_session

        self.path = str(path)
        self.session = ort_session(path, level, threads=threads, spinning=True)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: Tensor) -> Tensor:
        feed = {self.input_name: np.ascontiguousarray(x.detach().float().cpu().numpy())}
        try:
            out = self.session.run(None, feed)[0]
        except Exception as exc:  # onnxruntime's own exception types
            raise SrqError(f"onnxruntime failed on {self.path}: {short_reason(exc)}") from exc
        return torch.from_numpy(out).to(x.device)

    def extra_repr(self) -> str:
        return self.path


def _check(path: Path) -> None:
    if not path.exists():
        raise SrqError(f"model file not found: {path}")
    if not path.is_file():
        raise SrqError(f"{path} is not a file")


def read_info(path: str | os.PathLike) -> ModelInfo:
    """Metadata of an srq model file, packed safetensors or srq ONNX export."""
    from srqcli.export.packed import packed_metadata, read_packed_info
    from srqcli.export.workflow import onnx_model_info

    path = Path(path)
    _check(path)
    if path.suffix == ".onnx":
        return onnx_model_info(path)
    if packed_metadata(path) is not None:
        return read_packed_info(path)
    return read_model_info(path)


def load_any(path: str | os.PathLike) -> tuple[nn.Module, ModelInfo, str]:
    """``(model, info, kind)``; kind is ``float``, ``quantized`` (checkpoint or packed) or ``onnx``."""
    from srqcli.export.packed import load_packed, packed_metadata

    path = Path(path)
    _check(path)
    if path.suffix == ".onnx":
        info = read_info(path)
        return OnnxModule(path), info, "onnx"
    if packed_metadata(path) is not None:
        model, info = load_packed(path)
        return model, info, "quantized"
    model, info = load_model(path)
    return model, info, "quantized" if info.quantized else "float"


def resolve_source(target: str | os.PathLike) -> Path:
    """The quantized model file behind ``target`` (a run folder or a model file)."""
    path = Path(target)
    if path.is_dir():
        model = path / RUN_MODEL
        if not model.is_file():
            raise SrqError(f"{path} is not an srq run folder ({RUN_MODEL} not found)")
        return model
    if not path.exists():
        raise SrqError(f"model not found: {path} (pass an srq run folder or its model.safetensors)")
    return path


def load_quantized_source(path: Path) -> tuple[nn.Module, ModelInfo]:
    """The quantized PyTorch model in ``path``: an ``srq.quantized`` checkpoint or an
    ``srq.packed`` export, which rebuilds the same model. An ONNX export cannot be turned back
    into one, so it is refused with the file to pass instead."""
    from srqcli.export.packed import PACKED, load_packed

    if path.suffix == ".onnx":
        run = path.parent
        instead = (f"the run folder {run}" if (run / RUN_MODEL).is_file()
                   else f"the run folder it came from or its {RUN_MODEL}")
        raise SrqError(f"{path} is already an ONNX export; pass {instead}")
    if path.suffix != ".safetensors":
        raise SrqError(f"{path} is not an srq quantized model: pass a run folder or the "
                       f"{RUN_MODEL} of srq quantize (quantize a float checkpoint first)")
    fmt = safetensors_format(path)
    if fmt == FLOAT:
        raise SrqError(f"{path} is a float model: quantize it first with srq quantize")
    if fmt == PACKED:
        return load_packed(path)
    if fmt != QUANTIZED:
        raise SrqError(f"{path} is not an srq model file (no srq metadata): quantize a float "
                       "checkpoint first with srq quantize")
    return load_model(path)
