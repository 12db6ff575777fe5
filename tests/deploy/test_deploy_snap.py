"""The bias snap: after it, the trained model's folded biases are the exported file's int32 biases."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from srqcli.deploy.build import build_deploy_model
from srqcli.deploy.graph import DeployModel
from srqcli.deploy.snap import snap_biases
from srqcli.export.demo import quantize_untrained, randomize_batchnorm
from srqcli.export.workflow import eager_quantizers, onnx_proto

SHAPE = (1, 3, 8, 8)


def _model(bits: int, per_channel: bool, **quant) -> nn.Module:
    """Every way a fused layer's bias reaches the file: conv + BatchNorm (β moves), conv with
    its own bias + a BatchNorm without affine (the bias moves, divided by 1/σ), a linear layer
    with a bias and no BatchNorm (the bias moves as is)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8, affine=False), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 10))
    randomize_batchnorm(model)
    return quantize_untrained(model, (16, *SHAPE[1:]), weight_bits=bits, act_bits=bits,
                              per_channel=per_channel, **quant)


def _file(model: nn.Module):
    proto, stats, _, frozen, _ = onnx_proto(model, SHAPE)
    return frozen, stats.bias_inputs, DeployModel(proto).bias_grids()


X = torch.randn(512, *SHAPE[1:], generator=torch.Generator().manual_seed(1)) * 2
CASES = [(4, False), (4, True), (3, False), (3, True)]


@pytest.mark.parametrize("bits,per_channel", CASES)
def test_folded_biases_equal_the_int32_biases_of_the_file(bits, per_channel):
    model = _model(bits, per_channel)
    frozen, inputs, grids = _file(model)
    before = {name: (grids[inputs[name]].value - fl.folded_bias).abs().max() / grids[inputs[name]].step.max()
              for name, fl in frozen.layers.items() if inputs.get(name) in grids}
    assert set(before) == {"0", "3", "7"}  # the three fused layers with a bias
    assert max(before.values()) > 0.01  # off their grids by a sizeable part of a step

    snap = snap_biases(model, SHAPE)
    assert [s.target for s in snap.layers] == ["1.bias", "3.bias", "7.bias"]
    frozen, inputs, grids = _file(model)
    for name in before:
        grid = grids[inputs[name]]
        deployed = frozen.layers[name].deploy_bias  # the float32 bias the file stores
        # int32 bias × its grid step is the stored bias, to float32 rounding
        assert torch.allclose(grid.value.float(), deployed, rtol=2 ** -23, atol=0), name


@pytest.mark.parametrize("bits,per_channel", CASES)
def test_only_the_biases_move_and_only_by_less_than_half_a_grid_step(bits, per_channel):
    model = _model(bits, per_channel)
    _, inputs, grids = _file(model)
    old = copy.deepcopy(model.state_dict())
    snap = snap_biases(model, SHAPE)
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, old[k])}
    assert moved == {"1.bias", "3.bias", "7.bias"}
    half_step = max(float(g.step.max()) for g in grids.values()) / 2
    assert 0 < max(s.max_delta for s in snap.layers) <= half_step * (1 + 1e-6)
    assert snap.to_dict()["max_delta_output_steps"] == snap.max_delta_steps > 0


@pytest.mark.parametrize("bits,per_channel", CASES)
def test_fake_quant_computes_what_the_deploy_model_computes(bits, per_channel):
    """After the snap the two models differ only by the last layer's float arithmetic
    (float32 rounding of the float-output QGemm), and every prediction is the same."""
    model = _model(bits, per_channel)
    with torch.no_grad(), eager_quantizers():
        snap_biases(model, SHAPE)
        fake, deployed = model(X), build_deploy_model(model, SHAPE)(X)
    assert (fake - deployed).abs().max() <= 1e-5 * fake.abs().max()
    assert torch.equal(fake.argmax(1), deployed.argmax(1))


def test_without_the_snap_they_differ_by_whole_output_steps():
    model = _model(4, False)
    with torch.no_grad(), eager_quantizers():
        assert (model(X) - build_deploy_model(model, SHAPE)(X)).abs().max() > 1e-2


@pytest.mark.parametrize("bits,per_channel", CASES[:2])
def test_snapping_a_snapped_model_changes_nothing(bits, per_channel):
    model = _model(bits, per_channel)
    snap_biases(model, SHAPE)
    state = copy.deepcopy(model.state_dict())
    _, _, grids = _file(model)
    again = snap_biases(model, SHAPE)
    assert again.max_delta_steps == 0 and all(s.max_delta == 0 for s in again.layers)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    _, _, regrids = _file(model)
    assert grids.keys() == regrids.keys()
    assert all(torch.equal(g.codes, regrids[k].codes) and torch.equal(g.step, regrids[k].step)
               for k, g in grids.items())


def test_a_model_that_cannot_be_exported_is_left_alone():
    model = _model(3, False, method="dq")
    state = copy.deepcopy(model.state_dict())
    assert snap_biases(model, SHAPE) is None
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_the_model_keeps_its_mode():
    model = _model(4, False).train()
    snap_biases(model, SHAPE)
    assert model.training
