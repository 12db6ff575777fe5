"""Per-layer facts about a quantized model: parameters, bits, packed bytes, averages, MACs.

The single place that counts sizes and operations, so the summary of ``srq quantize``,
``metrics.json`` and the bit-allocation report (:mod:`srqcli.report.build`) always agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from srqcli.core.grid import IntGrid
from srqcli.errors import SrqError, short_reason
from srqcli.nn.layers import QUANT_LAYERS, is_quant_layer
from srqcli.nn.encodings import layer_encodings
from srqcli.nn.quantizer import Quantizer

FLOAT_BITS = 32
#: A latent weight counts as "clustered" when within this many steps of its grid point.
CLUSTER_RADIUS = 0.25


@dataclass(frozen=True)
class LayerStats:
    """Size facts of one quantized layer."""

    name: str
    type: str
    shape: tuple[int, ...]
    params: int  # weight elements (the quantized ones)
    weight_bits: int
    act_bits: int
    act_signed: bool
    weight_step: list[float]
    act_step: float
    weight_signed: bool = True
    groups: int = 1
    cluster_fraction: float | None = None  # see grid_proximity
    clipped_fraction: float | None = None
    output_bits: int | None = None  # the layer's output quantizer (--output-bits), if any
    output_step: float | None = None

    @property
    def packed_bytes(self) -> int:
        return math.ceil(self.params * self.weight_bits / 8)

    @property
    def per_channel(self) -> bool:
        return len(self.weight_step) > 1


@torch.no_grad()
def grid_proximity(weight: Tensor, step: Tensor, grid: IntGrid) -> tuple[float | None, float]:
    """How tightly the latent weights sit on their grid ("cluster promotion", docs/method.md).

    Returns ``(cluster_fraction, clipped_fraction)``: among the weights inside the clip range
    ``α·k_min ≤ w ≤ α·k_max`` the fraction with ``|w/α − round(w/α)| ≤ 1/4``, i.e. within
    α/4 of a grid point (``None`` when no weight is inside), and the fraction of all weights
    outside the clip range. ``step`` is a scalar or per-channel (broadcastable) step.
    """
    u = weight.detach().double() / step.detach().double().to(weight.device)
    inside = (u >= grid.kmin) & (u <= grid.kmax)
    n_inside = int(inside.sum())
    clipped = (u.numel() - n_inside) / max(u.numel(), 1)
    if n_inside == 0:
        return None, clipped
    near = ((u - torch.round(u)).abs() <= CLUSTER_RADIUS) & inside
    return int(near.sum()) / n_inside, clipped


class _HasCluster(Protocol):
    params: int
    cluster_fraction: float | None
    clipped_fraction: float | None


def pooled_cluster_fraction(rows: Iterable[_HasCluster]) -> float | None:
    """The model's cluster fraction: each layer's weighted by its weights inside the clip range
    (the fraction's denominator), so it equals counting all the model's weights at once."""
    inside = [(r.cluster_fraction, r.params * (1 - (r.clipped_fraction or 0.0)))
              for r in rows if r.cluster_fraction is not None]
    n_inside = sum(n for _, n in inside)
    return sum(f * n for f, n in inside) / n_inside if n_inside else None


def _layer_type(module: nn.Module) -> str:
    return type(module).__name__.replace("Quant", "")


def layer_stats(model: nn.Module) -> list[LayerStats]:
    """One :class:`LayerStats` per quantized layer, in definition order."""
    rows = []
    for name, m in model.named_modules():
        if not is_quant_layer(m):
            continue
        records = layer_encodings(m)
        w, a, o = records["weight"], records["input"], records.get("output")
        cluster, clipped = grid_proximity(m.weight, w.broadcast_step(m.weight.dim()), w.grid)
        rows.append(LayerStats(name, _layer_type(m), tuple(m.weight.shape),
                               m.weight.numel(), w.bits, a.bits, a.signed,
                               w.step.reshape(-1).tolist(), a.scalar,
                               weight_signed=w.signed, groups=getattr(m, "groups", 1),
                               cluster_fraction=cluster, clipped_fraction=clipped,
                               output_bits=o.bits if o else None, output_step=o.scalar if o else None))
    return rows


def model_cluster_fraction(model: nn.Module) -> float | None:
    """Fraction of the model's latent weights within α/4 of a grid point (``None`` if no
    quantized layer): recorded every epoch to see whether training promotes clustering."""
    return pooled_cluster_fraction(layer_stats(model))


def model_totals(model: nn.Module) -> dict[str, float]:
    """Float size, packed size (quantized weights at their bits, the rest float32), averages."""
    rows = layer_stats(model)
    quantized_ids = {id(m.weight) for m in model.modules() if is_quant_layer(m)}
    quantizer_ids = {id(p) for q in model.modules() if isinstance(q, Quantizer)
                     for p in q.parameters()}
    other = sum(p.numel() for p in model.parameters()
                if id(p) not in quantized_ids and id(p) not in quantizer_ids)
    steps = sum(len(r.weight_step) + 1 + (r.output_bits is not None) for r in rows)
    qparams = sum(r.params for r in rows)
    float_bytes = (qparams + other) * FLOAT_BITS // 8
    packed = sum(r.packed_bytes for r in rows) + (other + steps) * FLOAT_BITS // 8
    return {
        "quantized_params": qparams,
        "float_params": other,
        "avg_weight_bits": sum(r.params * r.weight_bits for r in rows) / max(qparams, 1),
        "float_bytes": float_bytes,
        "packed_bytes": packed,
        "compression": float_bytes / packed if packed else float("nan"),
    }


def stats_as_dicts(model: nn.Module) -> list[dict]:
    return [{**asdict(r), "packed_bytes": r.packed_bytes} for r in layer_stats(model)]


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Multiply-accumulates of every Conv2d and Linear for **one** input of ``input_shape``.

    ``input_shape`` is ``(C, H, W)`` (or ``(1, C, H, W)``). One forward pass with hooks:
    a layer's MACs are ``output positions × weight elements``, where output positions is the
    output's element count per image divided by the output channels/features. The weight
    tensor is ``(C_out, C_in/groups, kh, kw)``, so grouped and depthwise convolutions are
    counted exactly. Biases are not counted; a layer called twice counts twice; a layer the
    forward never calls gets 0.

    Quantized layers run their float forward during the count (quantizers are elementwise, so
    shapes are the same): no quantizer kernels are compiled and uncalibrated models work too.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or shape[0] != 1 or min(shape) < 1:
        raise SrqError(f"input shape must be (C, H, W), got {tuple(input_shape)}")
    macs: dict[str, int] = {}
    handles = []

    def hook_for(name: str):
        def hook(module: nn.Module, _args, output: Tensor) -> None:
            out_dim = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
            macs[name] += output.numel() // out_dim * module.weight.numel()  # batch of one
        return hook

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            macs[name] = 0
            handles.append(m.register_forward_hook(hook_for(name)))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    float_of = {q: f for f, q in QUANT_LAYERS.items()}
    swapped = [(m, type(m)) for m in model.modules() if type(m) in float_of]
    model.eval()
    try:
        for m, cls in swapped:
            m.__class__ = float_of[cls]  # same parameters; the float forward (cf. surgery)
        model(torch.zeros(shape, device=device))
    except Exception as exc:  # any failure of a user's model: say which input it was
        raise SrqError(f"cannot count MACs: the model does not run on an input of shape "
                       f"{list(shape)} ({short_reason(exc)})") from exc
    finally:
        for m, cls in swapped:
            m.__class__ = cls
        for h in handles:
            h.remove()
        model.train(was_training)
    return macs
