"""The frozen records (:class:`~srqcli.core.encoding.Encoding`) of a quantized model's quantizers.

The one place that reads a layer's quantizers by role, so the model file, the packed file, the
report and export name them alike: ``weight``, ``input`` and, with ``--output-bits``, ``output``.
"""

from __future__ import annotations

from torch import nn

from srqcli.core.encoding import Encoding
from srqcli.nn.layers import QuantConv2d, QuantLinear, is_quant_layer
from srqcli.nn.output_quant import output_quantizer


def layer_encodings(layer: QuantConv2d | QuantLinear) -> dict[str, Encoding]:
    """``{role: record}`` of one quantized layer."""
    records = {"weight": layer.weight_quant.encoding(), "input": layer.input_quant.encoding()}
    out = output_quantizer(layer)
    if out is not None:
        records["output"] = out.encoding()
    return records


def model_encodings(model: nn.Module) -> dict[str, dict[str, Encoding]]:
    """``{layer: {role: record}}`` of every quantized layer, in module order."""
    return {name: layer_encodings(m)  # type: ignore[arg-type]
            for name, m in model.named_modules() if is_quant_layer(m)}
