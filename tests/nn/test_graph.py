"""The dataflow-graph analysis shared by surgery and export: which layer outputs stay float."""

from __future__ import annotations

from srqcli.models import build_model
from srqcli.nn.graph import float_output_sites, trace
from srqcli.nn.surgery import quantizable_layers


def _sites(arch: str, in_channels: int, size: int, drop: tuple[str, ...] = ()) -> dict[str, str]:
    model = build_model(arch, 10, in_channels)
    names = [n for n, _ in quantizable_layers(model) if n not in drop]
    return float_output_sites(trace(model, (2, in_channels, size, size)), names)


def test_resnet20_residual_branches_shortcuts_and_stem_stay_float():
    blocks = [f"layer{s}.{b}" for s in (1, 2, 3) for b in (0, 1, 2)]
    want = {"conv1": "bn1"}  # the stem's ReLU feeds block 1's conv and its skip connection
    want.update({f"{b}.conv2": f"{b}.bn2" for b in blocks})  # read by the residual add
    want.update({f"layer{s}.0.shortcut.0": f"layer{s}.0.shortcut.1" for s in (2, 3)})
    assert _sites("resnet20", 1, 28) == want  # every conv1 feeds a quantizer; fc is the output


def test_a_chain_of_quantized_layers_has_no_float_outputs():
    assert _sites("lenet5", 1, 28) == {}


def test_a_layer_feeding_a_float_layer_keeps_a_float_output():
    # conv1 → BN → ReLU → pool → conv2: with conv2 left float, nothing quantizes conv1's output
    assert _sites("lenet5", 1, 28, drop=("conv2",)) == {"conv1": "bn1"}
