"""Check an exported ONNX model against the PyTorch quantized model with onnxruntime.

The ONNX file runs with graph optimisations off (``ORT_DISABLE_ALL``: every Q/DQ op executed as
written) and at onnxruntime's default level (``ORT_ENABLE_ALL``: convolutions and matmuls fused
into integer kernels) on the same inputs as the PyTorch model. For each level we report the
largest difference in units of the **output step**, the fraction of outputs within one step
and the top-1 agreement.

The output step is the resolution of the logits: ``α_x·max_c scale_c`` (input step times the
largest dequantization scale) of the quantized layer producing the output; for a model whose
output is not produced by a quantized layer, 1/256 of the largest reference output.

What must hold (gates), and why the tolerances are not zero:

1. ``ORT_DISABLE_ALL`` vs PyTorch: ≥ 90% of outputs within 1 output step. The graph computes
   the same integers as PyTorch, but float sums run in another order, so an activation within
   ~1e-6 of a rounding tie may land on the other code, and that flip propagates. Measured: no
   flip at all in trained LeNet-5 (real data) or in randomised ResNet-18/MobileNet-V2 on
   random inputs (max 3e-4 steps); in randomised (untrained) ResNet-20s a handful of ties
   among millions of activations, amplified by random BatchNorm gains, left 95–98% of outputs
   within 1 step.
2. Default level vs the **deploy model** (:mod:`srqcli.deploy`): the file itself run in PyTorch
   with onnxruntime's integer-kernel arithmetic. Where every op between the fused integer
   kernels is a single IEEE operation (:attr:`DeployPlan.exact`: every conv fused, as with
   ``--output-bits 8``) the gate is **identical outputs**: not one value may differ. Where
   the graph keeps float convolutions, pooling sums or transcendental functions, onnxruntime
   may sum or approximate them differently in the last bit, and the gate is ≥ 90% within one
   step (the identical fraction is reported). The number of layers the deploy model fuses
   must equal the integer kernels onnxruntime executes.
3. With real data (``--data``) top-1 agreement is gated too: ≥ 99% for 1 and 2. (On random
   inputs to an untrained model the logits are nearly tied and top-1 agreement is noise, so it
   is reported, not gated.) The default level vs the trained PyTorch model is reported only:
   the file differs from the trained model by the int32 rounding of its biases, by design, and
   what that costs is reported as the deployed accuracy (``srq quantize``/``srq eval``), not
   refused (a Fashion-MNIST ResNet-20 W4A4: 98.4% top-1 agreement, deployed top-1 0.14 points
   *above* the trained model's; BENCHMARKS.md "Deployed accuracy").
4. A ``--requant`` export adds int8 roundings PyTorch does not do: gate 1 becomes top-1
   agreement ≥ ``DEFAULT_TOP1`` on real data (nothing on random inputs); gate 2 is unchanged.

A real export bug (wrong fold, sign, layout, or a broken runtime fusion such as
onnxruntime#24711) moves every output by many steps and fails these gates.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from srqcli.deploy.graph import FUSED_KERNELS, DeployModel
from srqcli.errors import SrqError, short_reason

LEVELS = ("disabled", "default")
WITHIN = 0.90  # gates 1 and 2: fraction of outputs within one output step
TOP1 = 0.99  # gates 1 and 2 with real data: top-1 agreement
DEFAULT_TOP1 = 0.97  # gate 1 of a --requant export on real data


def ort_session(model: str | os.PathLike | bytes, level: str = "default", threads: int = 2,
                optimized_path: str | os.PathLike | None = None, spinning: bool = False):
    """An onnxruntime CPU session; ``level`` is ``disabled``, ``basic`` or ``default``.

    ``spinning=False`` (verification) stops idle worker threads from busy-waiting, which on a
    loaded machine slows everything else down; keep it on to measure latency. Even then the
    workers stop spinning when a run ends (``session.force_spinning_stop``): otherwise the idle
    workers of one session keep spinning into the next session's run. On 2 cores, timing three
    ResNet-20 sessions in turn made the float model 3× slower at batch 1 (1.17 ms against
    0.39 ms alone) and pulled every speed-up towards 1; with the stop, in turn equals alone.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.add_session_config_entry("session.force_spinning_stop", "1")
    so.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    }.get(level, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
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

    level: str  # onnxruntime optimisation level: disabled | default
    against: str  # pytorch | deploy
    images: int
    max_steps: float
    within_one_step: float  # fraction of output values
    top1_agreement: float  # fraction of images
    ok: bool = True
    min_within: float | None = None  # the gate on within_one_step (None: reported, not gated)
    min_top1: float | None = None  # the gate on top1_agreement (None: reported, not gated)
    identical: float = 0.0  # fraction of output values bit-identical
    require_identical: bool = False  # the gate: every output value identical

    def tolerance(self) -> str:
        """The gate in words, so a reader sees what PASS means (or that nothing is gated)."""
        if self.require_identical:
            return "identical outputs"
        gates = [f"≥{100 * self.min_within:g}% within 1 step"] if self.min_within is not None else []
        if self.min_top1 is not None:
            gates.append(f"top-1 ≥{100 * self.min_top1:g}%")
        return ", ".join(gates) or "none (reported only)"


@dataclass
class VerifyReport:
    inputs: str  # "random" or a data description
    output_step: float
    results: list[Agreement] = field(default_factory=list)
    op_types: dict[str, int] = field(default_factory=dict)
    fused_layers: int | None = None  # integer kernels in the deploy model
    float_layers: list[str] = field(default_factory=list)  # convs/gemms left to float kernels
    inexact_ops: list[str] = field(default_factory=list)  # op types not bit-identical (graph.py)
    kernel_mismatch: str | None = None  # the deploy model fuses other layers than onnxruntime

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results) and self.kernel_mismatch is None

    def to_dict(self) -> dict:
        return {"inputs": self.inputs, "output_step": self.output_step, "ok": self.ok,
                "results": [asdict(r) for r in self.results], "executed_op_types": self.op_types,
                "fused_layers": self.fused_layers, "float_layers": self.float_layers, "inexact_ops": self.inexact_ops,
                "kernel_mismatch": self.kernel_mismatch}

    def failure(self) -> str:
        bad = [r for r in self.results if not r.ok]
        head = [self.kernel_mismatch] if self.kernel_mismatch else []
        return "; ".join(head + [f"{r.level} optimisation vs {r.against}: max {r.max_steps:.3g} output steps, "
                         f"{100 * r.within_one_step:.2f}% within 1 step, top-1 agreement "
                         f"{100 * r.top1_agreement:.2f}% (tolerance: {r.tolerance()})" for r in bad])


def compare(level: str, against: str, ref: np.ndarray, out: np.ndarray, step: float,
            min_within: float | None = WITHIN, min_top1: float | None = TOP1,
            require_identical: bool = False) -> Agreement:
    """Agreement of ``out`` with ``ref``; ``ok`` against the given thresholds (``None``: no gate;
    ``require_identical``: every value must be equal, and the thresholds are not used)."""
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64)) / step
    n = ref.shape[0]
    top1 = float((out.reshape(n, -1).argmax(1) == ref.reshape(n, -1).argmax(1)).mean()) if n else 1.0
    within = float((diff <= 1.0 + 1e-6).mean()) if diff.size else 1.0
    identical = float((out == ref).mean()) if diff.size else 1.0
    if require_identical:
        min_within = min_top1 = None
    agr = Agreement(level, against, n, float(diff.max()) if diff.size else 0.0, within, top1,
                    min_within=min_within, min_top1=min_top1, identical=identical,
                    require_identical=require_identical)
    agr.ok = bool(np.isfinite(out).all()) and (min_within is None or within >= min_within) \
        and (min_top1 is None or top1 >= min_top1) and (not require_identical or identical == 1.0)
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
                output_step: float | None, *, inputs: str = "random", real_data: bool = False,
                list_ops: bool = True, exact: bool = True) -> VerifyReport:
    """Compare ``model_path`` (onnxruntime) with ``torch_model`` on ``batches`` (gates above).

    ``exact=False`` (a ``--requant`` export, which adds int8 roundings PyTorch does not do):
    gate 1 becomes top-1 agreement ≥ ``DEFAULT_TOP1`` on real data (nothing on random inputs);
    gate 2 is unchanged.
    """
    torch_model = torch_model.eval().cpu()
    x, ref = run_torch(torch_model, batches)
    step = output_step if output_step and output_step > 0 else float(np.abs(ref).max() / 256 or 1.0)
    report = VerifyReport(inputs, step)
    outs = {}
    for level in LEVELS:
        outs[level] = run_onnx(ort_session(model_path, level), x)
        if outs[level].shape != ref.shape:
            raise SrqError(f"the exported model's output shape {outs[level].shape} differs from "
                           f"PyTorch's {ref.shape}")
    top1 = TOP1 if real_data else None
    if exact:
        report.results.append(compare("disabled", "pytorch", ref, outs["disabled"], step, WITHIN, top1))
    else:
        report.results.append(compare("disabled", "pytorch", ref, outs["disabled"], step, None,
                                      DEFAULT_TOP1 if real_data else None))
    report.results.append(compare("default", "pytorch", ref, outs["default"], step, None, None))
    deploy = DeployModel(onnx.load(str(model_path)))
    with torch.no_grad():
        deployed = np.concatenate([deploy(torch.from_numpy(x[i:i + 64])).numpy() for i in range(0, len(x), 64)])
    report.fused_layers = len(deploy.plan.fused)
    report.float_layers = [name.removesuffix("/Conv").removesuffix("/Gemm") for name in deploy.plan.float_layers]
    inexact = set(deploy.plan.inexact.values())
    if list_ops:
        report.op_types = dict(sorted(executed_op_types(model_path, Path(model_path).parent).items()))
        kernels = sum(n for k, n in report.op_types.items() if k in FUSED_KERNELS.values())
        if kernels != report.fused_layers:
            report.kernel_mismatch = (f"onnxruntime runs {kernels} integer conv/gemm kernels where the deploy "
                                      f"model fuses {report.fused_layers} layers")
        # other fused quantized ops (QLinearAdd, ...) compute in ways the deploy model does not model
        inexact.update(k for k in report.op_types if k.startswith("QLinear") and k not in FUSED_KERNELS.values())
    report.inexact_ops = sorted(inexact)
    report.results.append(compare("default", "deploy", deployed, outs["default"], step, WITHIN, top1,
                                  require_identical=not inexact))
    return report


def random_batches(input_shape: tuple[int, ...], batches: int, batch_size: int = 32,
                   seed: int = 0) -> list[torch.Tensor]:
    """Standard-normal inputs (the scale of normalised images)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn((batch_size, *input_shape[1:]), generator=gen) for _ in range(batches)]
