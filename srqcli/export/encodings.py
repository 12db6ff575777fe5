"""Freeze a quantized model into integer codes, scales and biases (docs/method.md §7).

For every quantized layer this gives two views of the same numbers:

* the **trained** view, exactly what the PyTorch model computes: integer weight codes
  ``k = clamp(round(w/α), k_min, k_max)``, the weight step ``α`` (per tensor or per output
  channel), the layer's own bias, the input-activation encoding (bits, signedness, step) and,
  with ``--output-bits``, the output encoding (:mod:`srqcli.nn.output_quant`; applied after
  the folded BN);
* the **deploy** view, with the BatchNorm that directly follows the layer folded in *exactly*:
  the codes are unchanged and the BN becomes a per-output-channel dequantization scale and a
  bias (:func:`srqcli.export.bn_fold.fold_batchnorm`),

  ``scale_c = α_c·γ_c/sqrt(var_c+eps)``,  ``bias_c = β_c + (b_c − μ_c)·γ_c/sqrt(var_c+eps)``.

  A channel whose ``γ_c`` is negative gets its codes negated and ``|scale_c|``, so scales are
  positive as integer kernels expect. Negating needs ``−k_min`` to exist: the one code that has
  no negative is ``−2^(b−1)`` at 8 bits (``128`` does not fit an int8). Such a channel keeps its
  codes and a negative scale (``DequantizeLinear`` is defined for any scale; export verifies
  the result against PyTorch).

Folded values are computed in float64 and stored as float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from srqcli.core.encoding import Encoding
from srqcli.core.srq import srq_forward_codes
from srqcli.errors import SrqError
from srqcli.export.bn_fold import fold_batchnorm
from srqcli.nn.layers import QuantConv2d, QuantLinear, is_quant_layer
from srqcli.nn.output_quant import output_quantizer
from srqcli.nn.quantizer import Quantizer


@dataclass
class FrozenLayer:
    """One quantized Conv2d/Linear, frozen: trained view plus BN-folded deploy view."""

    name: str
    kind: str  # "conv" | "linear"
    weight: Encoding  # α as trained: () per tensor or (C_out,) per channel, axis 0
    codes: Tensor  # int16, shape of the weight: trained codes (unflipped)
    bias: Tensor | None  # the layer's own float bias
    input: Encoding  # the input-activation quantizer (per tensor)
    bn: str | None = None  # name of the folded BatchNorm
    output: Encoding | None = None  # the output quantizer, after the folded BN
    # deploy view
    scale: Tensor = field(default_factory=lambda: torch.empty(0))  # float32 (C_out,)
    deploy_codes: Tensor = field(default_factory=lambda: torch.empty(0))  # int16, flipped channels
    folded_bias: Tensor | None = None  # float64 (C_out,), None when no bias and no BN
    flipped: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.bool))  # (C_out,)
    negative_scale_channels: list[int] = field(default_factory=list)  # the int8 −128 edge case
    # layer geometry
    stride: tuple[int, ...] = (1, 1)
    padding: tuple[int, ...] = (0, 0)
    dilation: tuple[int, ...] = (1, 1)
    groups: int = 1

    @property
    def deploy_bias(self) -> Tensor | None:
        """The folded bias as the file stores it (float32); the snap reads the float64 one."""
        return self.folded_bias.float() if self.folded_bias is not None else None

    @property
    def signed_scale(self) -> Tensor:
        """Folded per-channel scale for the *trained* codes (negative where γ < 0)."""
        return torch.where(self.flipped, -self.scale, self.scale)

    @property
    def out_channels(self) -> int:
        return int(self.codes.shape[0])

    @property
    def params(self) -> int:
        return int(self.codes.numel())


def weight_codes(layer: QuantConv2d | QuantLinear) -> tuple[Tensor, Encoding]:
    """Integer codes (int16) of a layer's weight and the weight quantizer's encoding."""
    if not layer.weight_quant.uniform:
        raise SrqError("cannot export this model: its weights use learned non-uniform levels "
                       "(--method dq), and export needs integer codes on a uniform grid")
    enc = layer.weight_quant.encoding()
    grid = enc.grid
    if not grid.signed:
        raise SrqError(f"unsigned weight grids are not supported by export ({layer})")
    with torch.no_grad():
        weight = layer.weight.detach().float().cpu()
        codes = srq_forward_codes(weight, enc.broadcast_step(weight.dim()), grid.kmin, grid.kmax)
    return codes.to(torch.int16), enc


def _encoding(q: Quantizer) -> Encoding:
    enc = q.encoding()
    if enc.per_channel:
        raise SrqError("per-channel activation steps are not supported by export")
    return enc


def act_encoding(layer: QuantConv2d | QuantLinear) -> Encoding:
    return _encoding(layer.input_quant)


def output_encoding(layer: QuantConv2d | QuantLinear) -> Encoding | None:
    q = output_quantizer(layer)
    return _encoding(q) if q is not None else None


def freeze_layer(name: str, layer: QuantConv2d | QuantLinear, bn: tuple[str, nn.Module] | None = None) -> FrozenLayer:
    """Freeze one quantized layer, folding ``bn`` (``(name, module)``) into it when given."""
    codes, weight = weight_codes(layer)
    c_out = codes.shape[0]
    kind = "conv" if isinstance(layer, nn.Conv2d) else "linear"
    frozen = FrozenLayer(
        name=name, kind=kind, weight=weight, codes=codes,
        bias=layer.bias.detach().float().clone() if layer.bias is not None else None,
        input=act_encoding(layer), bn=bn[0] if bn else None, output=output_encoding(layer),
    )
    if kind == "conv":
        if layer.padding_mode != "zeros":
            raise SrqError(f"layer {name}: padding_mode={layer.padding_mode!r} cannot be exported "
                           "(only zero padding)")
        if isinstance(layer.padding, str):
            raise SrqError(f"layer {name}: padding={layer.padding!r} cannot be exported; use integer padding")
        frozen.stride, frozen.padding = tuple(layer.stride), tuple(layer.padding)
        frozen.dilation, frozen.groups = tuple(layer.dilation), layer.groups
    scale = channel_steps(weight, c_out)
    bias = frozen.bias.double() if frozen.bias is not None else None
    if bn is not None:
        scale, bias = fold_batchnorm(scale, bias, bn[1])
    grid = weight.grid
    deploy = codes.clone()
    flipped = torch.zeros(c_out, dtype=torch.bool)
    negative = []
    for c in torch.nonzero(scale < 0).flatten().tolist():
        if bool((codes[c] == grid.kmin).any()) and -grid.kmin > 127:
            negative.append(c)  # −(−128) does not fit an int8 container: keep a negative scale
            continue
        deploy[c] = -deploy[c]
        scale[c] = -scale[c]
        flipped[c] = True
    frozen.scale = scale.float()
    frozen.deploy_codes = deploy
    frozen.folded_bias = bias
    frozen.flipped = flipped
    frozen.negative_scale_channels = negative
    return frozen


def channel_steps(weight: Encoding, channels: int) -> Tensor:
    """The weight step of every output channel, float64 ``(C_out,)``: the unfolded scale."""
    step = weight.step.double()
    return step.expand(channels).clone() if step.numel() == 1 else step.clone()


@dataclass
class FrozenModel:
    """All quantized layers of a model, frozen, in module order."""

    layers: dict[str, FrozenLayer]
    bn_folds: dict[str, str]  # layer → folded BN (quantized and float layers)


def freeze_model(model: nn.Module, bn_folds: dict[str, str], *, require_quantized: bool = True) -> FrozenModel:
    """Freeze every quantized layer of ``model``; ``bn_folds`` from :func:`graph.find_bn_folds`.

    ``require_quantized=False`` accepts a float model (no layers: a float ONNX baseline)."""
    modules = dict(model.named_modules())
    layers = {}
    for name, module in modules.items():
        if is_quant_layer(module):
            bn_name = bn_folds.get(name)
            bn = (bn_name, modules[bn_name]) if bn_name else None
            site = getattr(module, "output_site", None)
            if output_quantizer(module) is not None and site != (bn_name or name):
                raise SrqError(f"cannot export layer {name}: its output quantizer acts on {site}, but "
                               f"export computes its output at {bn_name or name}")
            layers[name] = freeze_layer(name, module, bn)  # type: ignore[arg-type]
    if not layers and require_quantized:
        raise SrqError("the model has no quantized layers: export needs an srq-quantized model "
                       "(run srq quantize first)")
    return FrozenModel(layers, dict(bn_folds))
