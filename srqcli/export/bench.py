"""onnxruntime latency of exported models, and the float ONNX baseline they are compared with.

Used for BENCHMARKS.md: :func:`float_onnx` exports the *float* model through the same builder
(BatchNorm folded into the float weights, same ops) so the comparison isolates quantization;
:func:`latency` is the median wall time of ``session.run`` at a fixed thread count, all models
measured in alternating rounds in one process.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from torch import nn

from srqcli.export.encodings import freeze_model
from srqcli.export.to_onnx import build_onnx
from srqcli.export.verify import executed_op_types, ort_session
from srqcli.io.atomic import atomic_path
from srqcli.nn.graph import trace


def float_onnx(model: nn.Module, shape: tuple[int, ...], path: str | os.PathLike, opset: int = 19) -> Path:
    """Write the float ``model`` (no quantizers) as ONNX, BN folded, batch dimension dynamic."""
    traced = trace(model, (2, *shape[1:]))
    proto, _ = build_onnx(traced, freeze_model(model, traced.bn_folds, require_quantized=False),
                          opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return Path(path)


def latency(paths: dict[str, str | os.PathLike], shape: tuple[int, ...], *, threads: int = 2,
            warmup: int = 3, rounds: int = 30, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per ``session.run`` of each model in each round, measured side by side.

    All sessions (default optimisation level, ``threads`` intra-op threads, spinning within a
    run only: :func:`srqcli.export.verify.ort_session`) are
    loaded first; each round then runs every model once, in turn (A B C … A B C …), so load
    from other processes on a shared machine hits all of them alike and their ratios stay
    comparable even when absolute times drift (docs/benchmark-protocol.md).
    """
    sessions = {name: ort_session(path, "default", threads=threads, spinning=True)
                for name, path in paths.items()}
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    feeds = {name: {s.get_inputs()[0].name: x} for name, s in sessions.items()}
    for _ in range(warmup):
        for name, s in sessions.items():
            s.run(None, feeds[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feeds[name])
            times[name].append(time.perf_counter() - start)
    return times


def speedup(times: dict[str, list[float]], base: str, name: str) -> float:
    """Median over rounds of ``base``'s time ÷ ``name``'s time in the same round."""
    return float(np.median(np.array(times[base]) / np.array(times[name])))


def latency_table(paths: dict[str, str | os.PathLike], shape: tuple[int, ...], *, base: str = "float",
                  batches: tuple[int, ...] = (1, 16), threads: int = 2, rounds: int = 30) -> dict[str, dict[str, float]]:
    """Per batch size (``shape`` without the batch dimension), median ms of each model and its
    speed-up over ``base`` (median of per-round ratios); keys ``{name}_b{batch}``."""
    table: dict[str, dict[str, float]] = {"latency_ms": {}, "speedup": {}}
    for batch in batches:
        times = latency(paths, (batch, *shape), threads=threads, rounds=rounds)
        for name in paths:
            table["latency_ms"][f"{name}_b{batch}"] = 1000 * float(np.median(times[name]))
            table["speedup"][f"{name}_b{batch}"] = speedup(times, base, name)
    return table


def op_profile(path: str | os.PathLike, shape: tuple[int, ...], *, threads: int = 2, runs: int = 10,
               warmup: int = 3, seed: int = 0) -> dict[str, float]:
    """Milliseconds per run spent in each op type of the optimised graph (onnxruntime's
    profiler, warm-up runs left out), largest first: where an export's time goes, and so why
    it is or is not faster than float."""
    import json

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level, opts.intra_op_num_threads, opts.enable_profiling = 3, threads, True
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    run_ends = sorted(e["ts"] + e["dur"] for e in events if e.get("name") == "model_run")
    start = run_ends[warmup - 1] if warmup else 0
    per_op: Counter = Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > start:
            per_op[e["args"]["op_name"]] += e["dur"]
    return {op: us / runs / 1000 for op, us in per_op.most_common()}


def integer_ops(path: str | os.PathLike) -> dict[str, int]:
    """Integer kernels onnxruntime executes for ``path`` (op type → count)."""
    ops = executed_op_types(path, Path(path).parent)
    return {k: v for k, v in sorted(ops.items())
            if k.startswith(("QLinear", "QGemm", "ConvInteger", "MatMulInteger", "MatMulNBits"))}
