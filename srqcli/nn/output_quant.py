"""Output quantizers: quantize, in training too, the layer outputs no quantizer would read.

srq quantizes every Conv2d/Linear *input*. A layer whose output feeds the next quantized layer
therefore has a quantized output as well, and onnxruntime runs it as an integer kernel
(``QLinearConv``/``QGemm`` need quantized input and output). Some outputs are read in float:
a ResNet block's second conv and its shortcut conv feed the residual add, and a stem whose
output feeds both a conv and a skip connection fans out. Those convs run in float after
export (ResNet-18: 12 of 21 convs, most of the time), or, quantized only at export
(``srq export --requant``), no longer match the trained model.

``output_bits`` (``srq quantize --output-bits 8``) puts a quantizer of the run's method on each
such output, at the module that produces it (the BatchNorm folded into the layer at export,
else the layer itself), so training sees the rounding and the export is fast *and* exact.
The quantizer is a child of the layer (``<layer>.output_quant``: saved with the layer's other
quantizers) applied by a forward hook on that module; the plan records the site
(:class:`srqcli.nn.surgery.LayerBits`) so a saved model is rebuilt the same way. Which outputs
stay float is decided on the traced graph (:func:`srqcli.nn.graph.float_output_sites`), the
same analysis export uses to place quantizers, so the two agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from srqcli.config import QuantConfig
from srqcli.errors import SrqError
from srqcli.methods.registry import make_quantizer
from srqcli.nn.quantizer import Quantizer

if TYPE_CHECKING:
    from srqcli.nn.surgery import LayerBits


class QuantizeOutput:
    """Forward hook replacing a module's output by ``quantizer(output)``.

    A callable object rather than a closure, so ``copy.deepcopy`` of the model gives a hook
    bound to the copied quantizer.
    """

    def __init__(self, quantizer: Quantizer) -> None:
        self.quantizer = quantizer

    def __call__(self, _module: nn.Module, _args: tuple[Tensor, ...], out: Tensor) -> Tensor:
        return self.quantizer(out)


def attach_output_quantizers(model: nn.Module, plan: list[LayerBits], cfg: QuantConfig) -> None:
    """Give each planned layer with ``output_bits`` its (uncalibrated) output quantizer."""
    modules = dict(model.named_modules())
    for lb in plan:
        if lb.output_bits is None:
            continue
        site = modules.get(lb.output_site or "")
        if site is None:
            raise SrqError(f"layer {lb.name}: its output quantizer's module {lb.output_site!r} "
                           "does not exist in this model")
        layer = modules[lb.name]
        layer.output_quant = make_quantizer(cfg, lb.output_bits, activation=True, channels=None,
                                            shape=layer.weight.shape)
        layer.output_site = lb.output_site  # export checks it folds the same BatchNorm
        site.register_forward_hook(QuantizeOutput(layer.output_quant))


def output_quantizer(layer: nn.Module) -> Quantizer | None:
    """The layer's output quantizer, or ``None``."""
    q = getattr(layer, "output_quant", None)
    return q if isinstance(q, Quantizer) else None
