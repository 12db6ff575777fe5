"""onnxruntime latency of exported models, and the float ONNX baseline they are compared with.

Used for BENCHMARKS.md: :func:`float_onnx` exports the *float* model through the same builder
(BatchNorm folded into the float weights, same ops) so the comparison isolates quantization;
:func:`latency` is the median wall time of ``session.run`` at a fixed thread count.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnx
from torch import nn

from srqcli.export.encodings import freeze_model
from srqcli.export.graph import trace
from srqcli.export.to_onnx import build_onnx
from srqcli.export.verify import executed_op_types, ort_session
from srqcli.io.atomic import atomic_path


def float_onnx(model: nn.Module, shape: tuple[int, ...], path: str | os.PathLike, opset: int = 19) -> Path:
    """Write the float ``model`` (no quantizers) as ONNX, BN folded, batch dimension dynamic."""
    traced = trace(model, (2, *shape[1:]))
    proto, _ = build_onnx(traced, freeze_model(model, traced.bn_folds, require_quantized=False),
                          opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return Path(path)


def latency(path: str | os.PathLike, shape: tuple[int, ...], *, threads: int = 2, warmup: int = 3,
            runs: int = 20, seed: int = 0) -> float:
    """Median seconds per ``run`` of ``path`` at the default optimisation level."""
    session = ort_session(path, "default", threads=threads, spinning=True)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    feed = {session.get_inputs()[0].name: x}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def integer_ops(path: str | os.PathLike) -> dict[str, int]:
    """Integer kernels onnxruntime executes for ``path`` (op type → count)."""
    ops = executed_op_types(path, Path(path).parent)
    return {k: v for k, v in sorted(ops.items())
            if k.startswith(("QLinear", "QGemm", "ConvInteger", "MatMulInteger", "MatMulNBits"))}
