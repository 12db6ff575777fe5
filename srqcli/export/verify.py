"""Check an exported ONNX model against the PyTorch quantized model with onnxruntime.

Runs the ONNX file twice, with graph optimisations off (``ORT_DISABLE_ALL``: every Q/DQ op
executed as written) and at onnxruntime's default level (``ORT_ENABLE_ALL``: convolutions and
matmuls fused into integer kernels), on the same inputs as the PyTorch model, and reports for
each: the largest difference in units of the **output step**, the fraction of outputs within
one step, and top-1 agreement.

The output step is the resolution of the logits: ``α_x·max_c scale_c`` (input step times the
largest dequantization scale) of the quantized layer producing the output; for a model whose
output is not produced by a quantized layer, 1/256 of the largest reference output.

Tolerances (why they are not zero): with optimisations off the graph computes the same
integers as PyTorch, but float sums are evaluated in a different order, so an activation that
lies within ~1e-6 of a rounding tie can land on the other code, and that flip propagates.
This is rare (none in LeNet-5 on 64 inputs; 2 ties among 4 M activations in a randomised
ResNet-20). With fusion onnxruntime also rounds each bias to the int32 accumulator grid and
requantizes in its own arithmetic, flipping ≈1% of codes per fused layer. Hence:

* ``ORT_DISABLE_ALL``: ≥ 99% of outputs within 1 output step and ≥ 99% top-1 agreement;
* default level: ≥ 97% top-1 agreement (``DEFAULT_TOP1``).

A real export bug (wrong fold, sign, layout or a broken runtime fusion, onnxruntime#24711)
moves every output by many steps and fails both.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from srqcli.errors import SrqError, short_reason

LEVELS = ("disabled", "default")
DISABLED_WITHIN = 0.99
DISABLED_TOP1 = 0.99
DEFAULT_TOP1 = 0.97


def ort_session(model: str | os.PathLike | bytes, level: str = "default", threads: int = 2,
                optimized_path: str | os.PathLike | None = None):
    """An onnxruntime CPU session; ``level`` is ``disabled`` or ``default``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if level == "disabled"
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    src = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        where = "the exported model" if isinstance(model, bytes) else str(model)
        raise SrqError(f"onnxruntime cannot load {where}: {short_reason(exc)}") from exc


def executed_op_types(model_path: str | os.PathLike, scratch_dir: str | os.PathLike) -> Counter:
    """Op types in the graph onnxruntime actually runs at the default optimisation level."""
    import onnx

    opt = Path(scratch_dir) / f".{Path(model_path).name}.ort-optimized.onnx"
    try:
        ort_session(model_path, "default", optimized_path=opt)
        return Counter(n.op_type for n in onnx.load(str(opt), load_external_data=False).graph.node)
    finally:
        opt.unlink(missing_ok=True)


@dataclass
class Agreement:
    """ONNX vs PyTorch at one onnxruntime optimisation level."""

    level: str
    images: int
    max_steps: float
    within_one_step: float  # fraction of output values
    top1_agreement: float  # fraction of images
    ok: bool = True


@dataclass
class VerifyReport:
    inputs: str  # "random" or a data description
    output_step: float
    results: list[Agreement] = field(default_factory=list)
    op_types: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def to_dict(self) -> dict:
        return {"inputs": self.inputs, "output_step": self.output_step, "ok": self.ok,
                "results": [asdict(r) for r in self.results], "executed_op_types": self.op_types}

    def failure(self) -> str:
        bad = [r for r in self.results if not r.ok]
        return "; ".join(f"{r.level} optimisation: max {r.max_steps:.3g} output steps, "
                         f"{100 * r.within_one_step:.2f}% within 1 step, top-1 agreement "
                         f"{100 * r.top1_agreement:.2f}%" for r in bad)


def compare(level: str, ref: np.ndarray, out: np.ndarray, step: float) -> Agreement:
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64)) / step
    n = ref.shape[0]
    top1 = float((out.reshape(n, -1).argmax(1) == ref.reshape(n, -1).argmax(1)).mean()) if n else 1.0
    within = float((diff <= 1.0 + 1e-6).mean()) if diff.size else 1.0
    agr = Agreement(level, n, float(diff.max()) if diff.size else 0.0, within, top1)
    if level == "disabled":
        agr.ok = within >= DISABLED_WITHIN and top1 >= DISABLED_TOP1
    else:
        agr.ok = top1 >= DEFAULT_TOP1
    if not np.isfinite(out).all():
        agr.ok = False
    return agr


def run_torch(model: nn.Module, batches: Iterable[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    with torch.no_grad():
        for x in batches:
            x = x.float().cpu()
            xs.append(x.numpy())
            ys.append(model(x).float().numpy())
    if not xs:
        raise SrqError("verification got no input batches")
    return np.concatenate(xs), np.concatenate(ys)


def run_onnx(session, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(outs)


def verify_onnx(model_path: str | os.PathLike, torch_model: nn.Module, batches: Iterable[torch.Tensor],
                output_step: float | None, *, inputs: str = "random", list_ops: bool = True) -> VerifyReport:
    """Compare ``model_path`` (onnxruntime, both levels) with ``torch_model`` on ``batches``."""
    torch_model = torch_model.eval().cpu()
    x, ref = run_torch(torch_model, batches)
    step = output_step if output_step and output_step > 0 else float(np.abs(ref).max() / 256 or 1.0)
    report = VerifyReport(inputs, step)
    for level in LEVELS:
        out = run_onnx(ort_session(model_path, level), x)
        if out.shape != ref.shape:
            raise SrqError(f"the exported model's output shape {out.shape} differs from PyTorch's {ref.shape}")
        report.results.append(compare(level, ref, out, step))
    if list_ops:
        report.op_types = dict(sorted(executed_op_types(model_path, Path(model_path).parent).items()))
    return report


def random_batches(input_shape: tuple[int, ...], batches: int, batch_size: int = 32,
                   seed: int = 0) -> list[torch.Tensor]:
    """Standard-normal inputs (the scale of normalised images)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn((batch_size, *input_shape[1:]), generator=gen) for _ in range(batches)]
