"""Output quantizers (``--output-bits``): placement, forward math, calibration, copies, files."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from srqcli.config import QuantConfig, Recipe
from srqcli.errors import SrqError
from srqcli.export.demo import randomize_batchnorm, write_quantized_file
from srqcli.io.quantized import load_model
from srqcli.methods.registry import make_quantizer
from srqcli.nn.surgery import is_quantizer_key, quantize_model

pytestmark = pytest.mark.usefixtures("eager_srq")


class Block(nn.Module):
    """stem conv → BN → ReLU, then one residual branch conv → BN added to the stem output."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        x = F.relu(x + self.bn(self.conv(x)))
        return self.fc(x.mean((2, 3)))


def _batches(n: int = 2) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(16, 3, 10, 10, generator=gen) for _ in range(n)]


def _quantized(method: str = "srq", output_bits: int = 8) -> tuple[nn.Module, list]:
    torch.manual_seed(0)
    model = randomize_batchnorm(Block()).eval()
    cfg = QuantConfig(method=method, weight_bits=3, act_bits=3, output_bits=output_bits)
    return quantize_model(model, cfg, _batches())


def test_plan_puts_quantizers_where_outputs_stay_float():
    model, plan = _quantized()
    sites = {lb.name: (lb.output_bits, lb.output_site) for lb in plan if lb.output_bits}
    assert sites == {"stem": (8, "bn0"), "conv": (8, "bn")}  # fc is the output: left float
    keys = [k for k in model.state_dict() if ".output_quant." in k]
    assert keys and all(is_quantizer_key(k) for k in keys)
    assert {k.split(".output_quant.")[0] for k in keys} == {"stem", "conv"}


def test_forward_rounds_the_folded_output_to_the_grid():
    model, _ = _quantized(output_bits=4)
    q = model.conv.output_quant
    seen: list[torch.Tensor] = []
    conv_out: list[torch.Tensor] = []
    model.conv.register_forward_hook(lambda _m, _a, out: conv_out.append(out))
    model.bn.register_forward_hook(lambda _m, _a, out: seen.append(out))  # runs after the quantizer's
    with torch.no_grad():
        model(_batches(1)[0])
        raw = nn.BatchNorm2d.forward(model.bn, conv_out[0])  # BN without hooks
    alpha, grid = q.alpha.detach(), q.grid
    assert bool(q.signed_flag) and (grid.kmin, grid.kmax) == (-8, 7)
    assert torch.equal(seen[0], alpha * torch.clamp(torch.round(raw / alpha), grid.kmin, grid.kmax))
    assert not torch.equal(seen[0], raw)


def test_steps_are_calibrated_on_the_float_network_outputs():
    torch.manual_seed(0)
    float_model = randomize_batchnorm(Block()).eval()
    outputs: list[torch.Tensor] = []
    handle = float_model.bn.register_forward_hook(lambda _m, _a, out: outputs.append(out.flatten()))
    with torch.no_grad():
        for x in _batches():
            float_model(x)
    handle.remove()
    cfg = QuantConfig(weight_bits=3, act_bits=3, output_bits=8)
    fresh = make_quantizer(cfg, 8, activation=True, channels=None, shape=float_model.conv.weight.shape)
    with torch.no_grad():
        fresh.init_step(torch.cat(outputs))  # below the subsampling threshold: all values
    model, _ = _quantized()
    assert torch.equal(model.conv.output_quant.alpha.detach(), fresh.alpha.detach())


@pytest.mark.parametrize("method", ["srq", "lsq", "ste"])
def test_training_backward_reaches_the_output_step(method):
    model, _ = _quantized(method)
    model.train()
    model(_batches(1)[0]).sum().backward()
    grads = [p.grad for p in model.conv.output_quant.parameters() if p.requires_grad]
    if method != "ste":  # STE keeps its calibrated range
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_deepcopy_quantizes_with_the_copys_quantizer():
    model, _ = _quantized()
    clone = copy.deepcopy(model)
    x = _batches(1)[0]
    with torch.no_grad():
        before = model(x)
        clone.conv.output_quant.log_alpha.add_(1.0)  # a much coarser output grid, in the copy only
        assert torch.equal(model(x), before)
        assert not torch.equal(clone(x), before)


def test_saved_model_rebuilds_output_quantizers(tmp_path):
    model, info = write_quantized_file(tmp_path / "m.safetensors", "resnet20", in_channels=3, image_size=16,
                                       weight_bits=3, act_bits=3, output_bits=8)
    assert sum(lb.output_bits is not None for lb in info.plan) == 12
    loaded, info2 = load_model(tmp_path / "m.safetensors")
    assert info2.plan == info.plan
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("bits", [1, 9])
def test_output_bits_out_of_range_is_refused(bits):
    recipe = Recipe()
    recipe.quant.output_bits = bits
    with pytest.raises(SrqError, match="quant.output_bits"):
        recipe.validate()
