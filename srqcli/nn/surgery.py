"""Model surgery: put quantizers (SRQ, or a ``--method`` baseline) on every Conv2d and Linear,
calibrated on the float net.

One place decides which layers are quantized and with how many bits (docs/method.md §7):
every Conv2d (grouped and depthwise included) and Linear gets a weight quantizer and an
input-activation quantizer; the network input uses ``input_bits`` (8); ``skip`` patterns leave
layers float; ``first_last_bits`` keeps the first and last layer (execution order) at a given
width (the LSQ protocol); ``layers`` patterns set per-layer bits (later patterns win).
A layer whose weights and input are both 8 bits gets 7-bit weights, so that its exported
integer kernel computes the same on every CPU (:func:`srqcli.core.grid.portable_weight_bits`).
With ``output_bits``, layers whose output no quantizer reads also get an output quantizer
(:mod:`srqcli.nn.output_quant`).

Steps are initialised from the *float* network (docs/method.md §4: calibrating with quantizers
already active zeroes 2-bit weights): activation samples are collected with hooks on the float
layers before they are swapped for quantized ones.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from srqcli.config import QuantConfig
from srqcli.core.grid import portable_weight_bits
from srqcli.errors import SrqError
from srqcli.methods.registry import make_quantizer
from srqcli.nn.graph import TracedModel, float_output_sites, trace
from srqcli.nn.layers import QUANT_LAYERS, QuantConv2d, QuantLinear, is_quant_layer
from srqcli.nn.output_quant import attach_output_quantizers
from srqcli.nn.quantizer import Quantizer, SRQQuantizer, refresh_sigma_ratios_

#: Activation values kept per layer and batch for the step search (a uniform subsample).
_SAMPLES_PER_BATCH = 1 << 16


@dataclass(frozen=True)
class LayerBits:
    """Bit-widths chosen for one layer; ``output_bits``/``output_site``: its output quantizer
    and the module whose output it quantizes (the folded BatchNorm, else the layer).

    This is the *plan*, what was requested before training, and it stays a type of its own
    rather than being derived from the trained quantizers' records
    (:class:`srqcli.core.encoding.Encoding`): it exists before any quantizer is calibrated
    (signedness and steps are not known yet), it is what rebuilds the module tree of a saved
    model and what resume and ``--start-from`` files are checked against, and it holds what no
    record does (where an output quantizer sits). The records say what was *trained*; model
    files store both.
    """

    name: str
    weight_bits: int
    act_bits: int
    output_bits: int | None = None
    output_site: str | None = None


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Float Conv2d/Linear layers (exact registry types) in definition order."""
    return [(n, m) for n, m in model.named_modules() if type(m) in QUANT_LAYERS]


def quant_layers(model: nn.Module) -> Iterator[tuple[str, QuantConv2d | QuantLinear]]:
    """Quantized layers of a model after surgery."""
    for name, module in model.named_modules():
        if is_quant_layer(module):
            yield name, module  # type: ignore[misc]


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern)


def plan_bits(names_in_order: list[str], cfg: QuantConfig) -> list[LayerBits]:
    """Bits of each quantized layer; ``names_in_order`` is the execution order."""
    for what, patterns in (("--skip", cfg.skip), ("per-layer bits", cfg.layers)):
        for pattern in patterns:
            if not any(_matches(n, pattern) for n in names_in_order):
                listed = ", ".join(names_in_order[:6]) + (", …" if len(names_in_order) > 6 else "")
                raise SrqError(f"{what}: pattern {pattern!r} matches no Conv2d/Linear layer "
                               f"(layers: {listed})")
    kept = [n for n in names_in_order if not any(_matches(n, p) for p in cfg.skip)]
    if not kept:
        raise SrqError("every Conv2d/Linear layer is excluded by --skip: nothing to quantize")
    plan = []
    for i, name in enumerate(kept):
        wb, ab = cfg.weight_bits, cfg.act_bits
        if cfg.first_last_bits is not None and i in (0, len(kept) - 1):
            wb = ab = cfg.first_last_bits
        for pattern, bits in cfg.layers.items():
            if _matches(name, pattern):
                wb = bits.get("weight_bits", wb)
                ab = bits.get("act_bits", ab)
        if i == 0:
            ab = cfg.input_bits if name == names_in_order[0] else ab
        plan.append(LayerBits(name, portable_weight_bits(wb, ab), ab))
    return plan


class _ActivationSampler:
    """Hooks collecting samples of float modules' inputs (``tap="input"``) or outputs, in
    execution order.

    ``per_channel`` also keeps samples as ``(channels, n)`` (axis 1), drawn with a generator of
    their own so the flat samples are the same either way.
    """

    def __init__(self, modules: Iterable[tuple[str, nn.Module]], seed: int,
                 per_channel: bool = False, tap: str = "input") -> None:
        self.samples: dict[str, list[Tensor]] = {}
        self.channel_samples: dict[str, list[Tensor]] = {}
        self.order: list[str] = []
        self.generator = torch.Generator().manual_seed(seed)
        self.channel_generator = torch.Generator().manual_seed(seed) if per_channel else None
        if tap == "input":
            self.handles = [m.register_forward_pre_hook(self._pre_hook(n)) for n, m in modules]
        else:
            self.handles = [m.register_forward_hook(self._hook(n)) for n, m in modules]

    def _pre_hook(self, name: str):
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
            self._record(name, args[0])
        return hook

    def _hook(self, name: str):
        def hook(_module: nn.Module, _args: tuple[Tensor, ...], out: Tensor) -> None:
            self._record(name, out)
        return hook

    def _record(self, name: str, value: Tensor) -> None:
        x = value.detach().float().flatten().cpu()
        if name not in self.samples:
            self.samples[name] = []
            self.order.append(name)
        if x.numel() > _SAMPLES_PER_BATCH:
            idx = torch.randint(x.numel(), (_SAMPLES_PER_BATCH,), generator=self.generator)
            x = x[idx]
        self.samples[name].append(x)
        if self.channel_generator is not None:
            self.channel_samples.setdefault(name, []).append(self._by_channel(value))

    def _by_channel(self, x: Tensor) -> Tensor:
        rows = x.detach().float().transpose(0, 1).reshape(x.shape[1], -1).cpu()
        keep = max(1, _SAMPLES_PER_BATCH // rows.shape[0])
        if rows.shape[1] > keep:
            rows = rows[:, torch.randint(rows.shape[1], (keep,), generator=self.channel_generator)]
        return rows

    def flat(self) -> dict[str, Tensor]:
        return {n: torch.cat(v) for n, v in self.samples.items()}

    def by_channel(self) -> dict[str, Tensor]:
        return {n: torch.cat(v, dim=1) for n, v in self.channel_samples.items()}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@dataclass
class Calibration:
    """Samples of the float network: each layer's input (``inputs``, ``input_channels``) and,
    when asked, the outputs of candidate output-quantizer sites (``outputs``…)."""

    order: list[str]  # layer execution order
    inputs: dict[str, Tensor]
    input_channels: dict[str, Tensor]
    outputs: dict[str, Tensor] = field(default_factory=dict)
    output_channels: dict[str, Tensor] = field(default_factory=dict)

    def share(self, gather: Callable[[Tensor], Tensor]) -> None:
        """Merge every sample set with the other processes' (``gather``: an all-gather)."""
        for table in (self.inputs, self.input_channels, self.outputs, self.output_channels):
            for name in list(table):
                table[name] = gather(table[name])


@torch.no_grad()
def collect_activations(model: nn.Module, batches: Iterable[Tensor], seed: int = 0,
                        per_channel: bool = False, output_sites: Iterable[str] = ()) -> Calibration:
    """Run ``batches`` through the float ``model``; sample every Conv2d/Linear input and the
    outputs of the modules named in ``output_sites``."""
    layers = quantizable_layers(model)
    modules = dict(model.named_modules())
    sampler = _ActivationSampler(layers, seed, per_channel)
    out_sampler = _ActivationSampler([(n, modules[n]) for n in output_sites], seed, per_channel, tap="output")
    was_training = model.training
    model.eval()
    try:
        ran = False
        for x in batches:
            model(x)
            ran = True
    finally:
        sampler.remove()
        out_sampler.remove()
        model.train(was_training)
    if not ran:
        raise SrqError("no calibration batches: the training data is empty")
    unused = [n for n, _ in layers if n not in sampler.samples]
    order = sampler.order + unused  # layers never called keep definition order at the end
    return Calibration(order, sampler.flat(), sampler.by_channel(), out_sampler.flat(), out_sampler.by_channel())


def attach_quantizers(model: nn.Module, plan: list[LayerBits], cfg: QuantConfig) -> nn.Module:
    """Swap planned float layers for quantized ones in place (uncalibrated quantizers), and
    attach the planned output quantizers."""
    modules = dict(model.named_modules())
    for lb in plan:
        layer = modules[lb.name]
        qcls = QUANT_LAYERS[type(layer)]
        layer.__class__ = qcls  # same parameters and buffers; only forward changes
        channels = layer.weight.shape[0] if cfg.per_channel else None
        layer.weight_quant = make_quantizer(cfg, lb.weight_bits, activation=False,
                                            channels=channels, shape=layer.weight.shape)
        layer.input_quant = make_quantizer(cfg, lb.act_bits, activation=True, channels=None,
                                           shape=layer.weight.shape)
    attach_output_quantizers(model, plan, cfg)
    return model


def _trace_float(model: nn.Module, input_shape: tuple[int, ...]) -> TracedModel:
    was_training = model.training
    try:
        return trace(model, input_shape, purpose="find the float layer outputs of")
    finally:
        model.train(was_training)


def output_sites(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, str]:
    """The layers of ``model`` whose output no quantizer reads (layer → the module whose output
    an output quantizer would act on): :func:`graph.float_output_sites` of the traced model."""
    names = [n for n, _ in quantizable_layers(model)]
    return float_output_sites(_trace_float(model, input_shape), names)


def with_output_sites(plan: list[LayerBits], sites: dict[str, str], bits: int) -> list[LayerBits]:
    """``plan`` with an output quantizer of ``bits`` on each layer of ``sites`` (layer → the
    module whose output it quantizes)."""
    return [dataclasses.replace(lb, output_bits=bits, output_site=sites[lb.name]) if lb.name in sites else lb
            for lb in plan]


@torch.no_grad()
def quantize_model(model: nn.Module, cfg: QuantConfig, calib_batches: Iterable[Tensor],
                   seed: int = 0, share: Callable[[Tensor], Tensor] | None = None
                   ) -> tuple[nn.Module, list[LayerBits]]:
    """Calibrate on the float ``model``, then attach and initialise quantizers in place.

    ``share`` merges one layer's activation samples with those of the other processes of a
    multi-process run (an all-gather), so the steps come from every process's calibration
    batches and are identical everywhere.
    """
    batches = iter(calib_batches)
    first = next(batches, None)
    if first is None:
        raise SrqError("no calibration batches: the training data is empty")
    # output quantizers sit where the traced graph says a layer's output stays float
    traced = _trace_float(model, (2, *first.shape[1:])) if cfg.output_bits else None
    sites = [traced.bn_folds.get(n, n) for n, _ in quantizable_layers(model)] if traced else []
    calib = collect_activations(model, itertools.chain([first], batches), seed,
                                per_channel=cfg.method == "dq", output_sites=sites)
    if share is not None:
        calib.share(share)
    plan = plan_bits(calib.order, cfg)
    if traced is not None:
        plan = with_output_sites(plan, float_output_sites(traced, [lb.name for lb in plan]), cfg.output_bits)
    attach_quantizers(model, plan, cfg)
    modules = dict(model.named_modules())
    for lb in plan:
        layer = modules[lb.name]
        layer.weight_quant.init_step(layer.weight)
        quantizers = [(layer.input_quant, calib.input_channels, calib.inputs, lb.name)]
        if lb.output_site is not None:
            quantizers.append((layer.output_quant, calib.output_channels, calib.outputs, lb.output_site))
        for q, by_channel, flat, key in quantizers:
            acts = (by_channel if q.calibrates_per_channel else flat).get(key)
            if acts is None:
                raise SrqError(f"layer {lb.name} was never called during calibration; skip it with --skip")
            q.init_step(acts)
    return model, plan


def is_quantizer_key(key: str) -> bool:
    """Whether a state_dict key belongs to a layer's weight, input or output quantizer."""
    return any(part in key for part in (".weight_quant.", ".input_quant.", ".output_quant."))


def float_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` without quantizer tensors: the float network a quantized model was built on."""
    return {k: v for k, v in state.items() if not is_quantizer_key(k)}


def rebuild_quantized(model: nn.Module, plan: list[LayerBits], cfg: QuantConfig) -> nn.Module:
    """Re-create the quantized structure of a saved model (steps come from its state_dict)."""
    return attach_quantizers(model, plan, cfg)


def quantizer_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of all quantizers (``log α``, ``log σ``, levels…: their own learning rate)."""
    return [p for m in model.modules() if isinstance(m, Quantizer) for p in m.parameters()]


def project_quantizers_(model: nn.Module) -> None:
    """Apply each quantizer's parameter constraints after an optimizer step, then refresh the
    SRQ quantizers' ``max σ/α`` in one read, so the next step's forwards never wait on the GPU."""
    quantizers = [m for m in model.modules() if isinstance(m, Quantizer)]
    for q in quantizers:
        q.project_()
    refresh_sigma_ratios_([q for q in quantizers if isinstance(q, SRQQuantizer)])
