"""Train with deploy numerics: move a model's biases onto onnxruntime's int32 grid.

The deploy model (the file ``srq export`` writes, :mod:`srqcli.deploy.graph`) differs from
the trained fake-quant model in one place only: onnxruntime rounds each fused layer's float
bias, BatchNorm folded in, to its int32 accumulator grid ``f32(x_scale·w_scale_c)``. The
exporter makes that grid fine (:mod:`srqcli.export.accumulator`), but a trained low-bit
network changes ~0.4–1.5% of its predictions under any bias change of that size, so the two
accuracies differ by a few tenths of a point in either direction.

:func:`snap_biases` removes the difference at its source: it builds the file exactly as
``srq export`` does, reads the bias each fused layer really adds (``int32 codes · step``)
and moves the model's own float parameters so that the folded bias *is* that value. The
folded bias is ``β + (b − μ)·γ/σ`` with a BatchNorm and ``b`` without, so the change
``Δ = b_deployed − b_folded`` goes to the BatchNorm's β (coefficient 1), or, without β, to the
layer's bias divided by ``γ/σ``. Exporting the snapped model again finds every bias already on
its grid: onnxruntime's rounding becomes a no-op, and a second snap changes nothing.

Only fused layers are snapped: onnxruntime 1.32 left the float bias of an unfused
``DQ(uint8) → Conv(DQ(int8))`` (a conv whose output is read in float, ``--output-bits 0``)
unrounded at every optimisation level on a one-conv graph, and the deploy model runs it in
float too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from srqcli.errors import SrqError
from srqcli.deploy.graph import BiasGrid
from srqcli.export.bn_fold import bn_affine
from srqcli.export.encodings import FrozenLayer, FrozenModel


@dataclass
class LayerSnap:
    """One fused layer's bias move."""

    name: str
    target: str  # the parameter that moved: "<bn>.bias" or "<layer>.bias"
    max_delta: float  # max |Δ| over channels, in the units of the folded layer output
    max_delta_steps: float | None  # the same in steps of the layer's output codes


@dataclass
class BiasSnap:
    """What :func:`snap_biases` did."""

    layers: list[LayerSnap] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # fused layers with neither β nor a bias to move

    @property
    def max_delta_steps(self) -> float:
        """Largest move, in output steps of its layer (0 when nothing moved)."""
        return max((s.max_delta_steps or 0.0 for s in self.layers), default=0.0)

    def describe(self) -> str:
        """One line for the console."""
        text = (f"biases snapped onto onnxruntime's int32 grid in {len(self.layers)} fused layers "
                f"(max |Δ| {self.max_delta_steps:.2g} output steps), so the trained model computes "
                "what the exported file computes")
        if self.skipped:
            text += f"; {len(self.skipped)} without a bias to move ({', '.join(self.skipped)})"
        return text

    def to_dict(self) -> dict:
        return {"layers": len(self.layers), "max_delta_output_steps": self.max_delta_steps,
                "max_delta": max((s.max_delta for s in self.layers), default=0.0), "skipped": self.skipped}


#: Exports a snap may take. Once the biases sit on their grids, the exporter's code scaling
#: (:func:`srqcli.export.accumulator.plan_code_scaling`) may prefer an equivalent coarser grid
#: for some channels (a tie it breaks towards the smaller multiplier), whose float32 step differs
#: in the last bit; the second round snaps onto that, and the third export finds nothing to change.
MAX_ROUNDS = 4


@dataclass
class _Export:
    frozen: FrozenModel
    bias_inputs: dict[str, str]
    grids: dict[str, BiasGrid]

    def grid(self, layer: str) -> BiasGrid | None:
        return self.grids.get(self.bias_inputs.get(layer, ""))


def snap_biases(model: nn.Module, shape: tuple[int, ...]) -> BiasSnap | None:
    """Move ``model``'s biases (in place) so its fused layers' folded biases equal the int32
    biases of its ``srq export`` file (NCHW ``shape``); ``None``, model untouched, when the
    model cannot be exported (e.g. ``--method dq``). ``model`` keeps its device and mode.

    Repeated until the file's int32 biases no longer change (:data:`MAX_ROUNDS`), so snapping
    a snapped model changes no parameter and no int32 bias."""
    first = _export(model, shape)
    if first is None:
        return None
    modules = dict(model.named_modules())
    current, targets = first, {}
    for _ in range(MAX_ROUNDS):
        targets = {name: _move(fl, modules, grid.value - fl.folded_bias)
                   for name, fl in current.frozen.layers.items() if (grid := current.grid(name)) is not None}
        after = _export(model, shape)
        assert after is not None  # moving biases cannot make a model unexportable
        done = _same_grids(current, after)
        current = after
        if done:
            break
    snap = BiasSnap(skipped=[name for name, target in targets.items() if target is None])
    for name, target in targets.items():
        grid = current.grid(name)
        if target is None or grid is None:
            continue
        moved = (current.frozen.layers[name].folded_bias - first.frozen.layers[name].folded_bias).abs()
        steps = float((moved / grid.output_step.double()).max()) if grid.output_step is not None else None
        snap.layers.append(LayerSnap(name, target, float(moved.max()), steps))
    return snap


def _export(model: nn.Module, shape: tuple[int, ...]) -> _Export | None:
    """The frozen layers and int32 bias grids of ``model``'s qdq export, or ``None``."""
    from srqcli.deploy.graph import DeployModel
    from srqcli.export.workflow import onnx_proto

    device = next(model.parameters()).device
    training = model.training
    try:
        proto, stats, _, frozen, _ = onnx_proto(model.eval().cpu(), shape)
    except SrqError:
        return None
    finally:
        model.to(device).train(training)
    return _Export(frozen, stats.bias_inputs, DeployModel(proto).bias_grids())


def _same_grids(a: _Export, b: _Export) -> bool:
    return a.grids.keys() == b.grids.keys() and all(
        torch.equal(g.codes, b.grids[k].codes) and torch.equal(g.step, b.grids[k].step) for k, g in a.grids.items())


@torch.no_grad()
def _move(fl: FrozenLayer, modules: dict[str, nn.Module], delta: torch.Tensor) -> str | None:
    """Add ``delta`` (float64, per channel) to the folded bias of ``fl`` through the model's
    parameters; the name of the parameter moved, ``None`` when there is none."""
    bn = modules[fl.bn] if fl.bn else None
    if bn is not None and bn.bias is not None:
        bn.bias.copy_((bn.bias.double() + delta.to(bn.bias.device)).to(bn.bias.dtype))
        return f"{fl.bn}.bias"
    layer = modules[fl.name]
    if layer.bias is None:
        return None
    coefficient = bn_affine(bn)[0].cpu() if bn is not None else torch.ones_like(delta)
    moved = layer.bias.double() + (delta / coefficient).to(layer.bias.device)
    layer.bias.copy_(moved.to(layer.bias.dtype))
    return f"{fl.name}.bias"
