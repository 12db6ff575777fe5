"""Model surgery (srqcli/nn/surgery.py): which layers, how many bits, calibration, state_dict."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from srqcli.config import QuantConfig
from srqcli.errors import SrqError
from srqcli.nn.layers import QuantConv2d, QuantLinear
from srqcli.nn.quantizer import SRQQuantizer
from srqcli.nn.surgery import LayerBits, quant_layers, quantize_model

EXEC_ORDER = ["stem", "block.0", "block.3", "mid", "head"]


pytestmark = pytest.mark.usefixtures("eager_srq")


class Net(nn.Module):
    """Definition order (block.0, block.3, head, mid, stem) differs from execution order
    (stem, block.0, block.3, mid, head): first/last by definition would be block.0/stem."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(8, 16, 3, padding=1, groups=2, bias=False),  # grouped
            nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16),  # depthwise
            nn.ReLU())
        self.head = nn.Linear(24, 5)
        self.mid = nn.Linear(16, 24)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)  # plain
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = self.block(x).mean((2, 3))
        return self.head(torch.relu(self.mid(x)))


def make_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    net = Net()
    with torch.no_grad():  # non-trivial BN statistics
        for bn in (net.bn, net.block[1]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.1, 0.1)
    return net.eval()


def batches(n: int = 3, signed: bool = True, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 3, 10, 10, generator=g) if signed
            else torch.rand(8, 3, 10, 10, generator=g) for _ in range(n)]


def quantize(cfg: QuantConfig, signed_input: bool = True, seed: int = 0):
    net = make_net(seed)
    float_net = copy.deepcopy(net)
    qnet, plan = quantize_model(net, cfg, batches(signed=signed_input))
    return float_net, qnet, plan


def bits_of(model: nn.Module) -> dict[str, tuple[int, int, bool, bool]]:
    """name → (weight bits, activation bits, weight signed, activation signed)."""
    return {n: (m.weight_quant.bits, m.input_quant.bits, bool(m.weight_quant.signed_flag),
                bool(m.input_quant.signed_flag)) for n, m in quant_layers(model)}


# ------------------------------------------------------------------------- structure

@pytest.mark.parametrize("signed_input", [True, False])
def test_every_conv_and_linear_is_quantized(signed_input):
    _, qnet, plan = quantize(QuantConfig(weight_bits=4, act_bits=3), signed_input)
    modules = dict(qnet.named_modules())
    for name in EXEC_ORDER:
        expected = QuantLinear if name in ("mid", "head") else QuantConv2d
        assert type(modules[name]) is expected, name
        assert isinstance(modules[name].weight_quant, SRQQuantizer)
        assert bool(modules[name].weight_quant.initialized)
        assert bool(modules[name].input_quant.initialized)
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in qnet.modules())
    assert [lb.name for lb in plan] == EXEC_ORDER  # execution order
    assert all(isinstance(lb, LayerBits) for lb in plan)
    b = bits_of(qnet)
    # network input: 8 bits, signedness from the data
    assert b["stem"] == (4, 8, True, signed_input)
    for name in EXEC_ORDER[1:]:  # after ReLU: unsigned activations; weights signed
        assert b[name] == (4, 3, True, False), name
    assert modules["block.0"].groups == 2 and modules["block.3"].groups == 16
    out = qnet(batches(1)[0])
    assert out.shape == (8, 5) and torch.isfinite(out).all()


def test_first_last_bits_follow_execution_order():
    _, qnet, plan = quantize(QuantConfig(weight_bits=2, act_bits=2, first_last_bits=8))
    b = bits_of(qnet)
    assert b["stem"][:2] == (7, 8)  # 8-bit weights on 8-bit inputs become 7-bit (pair bound)
    assert b["head"][:2] == (7, 8)
    for name in ("block.0", "block.3", "mid"):
        assert b[name][:2] == (2, 2), name
    assert {lb.name: (lb.weight_bits, lb.act_bits) for lb in plan} == {
        n: b[n][:2] for n in EXEC_ORDER}


def test_skip_patterns_leave_layers_float():
    _, qnet, plan = quantize(QuantConfig(skip=["block.*"]))
    modules = dict(qnet.named_modules())
    assert type(modules["block.0"]) is nn.Conv2d and type(modules["block.3"]) is nn.Conv2d
    assert not hasattr(modules["block.0"], "weight_quant")
    assert [lb.name for lb in plan] == ["stem", "mid", "head"]
    assert qnet(batches(1)[0]).shape == (8, 5)


def test_skipping_the_first_layer_moves_first_last_but_not_input_bits():
    _, qnet, _ = quantize(QuantConfig(weight_bits=3, act_bits=3, first_last_bits=6,
                                      skip=["stem"]))
    b = bits_of(qnet)
    assert "stem" not in b
    assert b["block.0"][:2] == (6, 6)  # first quantized layer; its input is not the net input
    assert b["head"][:2] == (6, 6)


def test_per_layer_patterns_override_bits():
    cfg = QuantConfig(weight_bits=4, act_bits=4, first_last_bits=8, layers={
        "block.*": {"weight_bits": 3},
        "block.3": {"act_bits": 5, "weight_bits": 2},  # later patterns win
        "head": {"weight_bits": 6},  # overrides first_last_bits
    })
    _, qnet, _ = quantize(cfg)
    b = bits_of(qnet)
    assert b["block.0"][:2] == (3, 4)
    assert b["block.3"][:2] == (2, 5)
    assert b["head"][:2] == (6, 8)
    assert b["stem"][:2] == (7, 8)
    assert b["mid"][:2] == (4, 4)


@pytest.mark.parametrize("act_bits,want", [(8, 7), (7, 8), (4, 8), (2, 8)])
def test_8bit_weights_stay_within_the_x86_pair_bound(act_bits, want):
    """8-bit weights train on the 7-bit grid exactly where their inputs are 8-bit: 255·128 breaks
    the int16 pair sums of AVX2 integer kernels, 255·64 and 127·128 do not."""
    cfg = QuantConfig(weight_bits=4, act_bits=4, layers={"mid": {"weight_bits": 8, "act_bits": act_bits}})
    _, qnet, plan = quantize(cfg)
    assert bits_of(qnet)["mid"][:2] == (want, act_bits)
    assert next(lb for lb in plan if lb.name == "mid").weight_bits == want


def test_pattern_matching_nothing_raises():
    with pytest.raises(SrqError, match="conv9"):
        quantize(QuantConfig(layers={"conv9": {"weight_bits": 3}}))


def test_skipping_everything_raises():
    with pytest.raises(SrqError):
        quantize(QuantConfig(skip=["*"]))


def test_uncalled_layer_raises_unless_skipped():
    net = make_net()
    net.unused = nn.Linear(3, 3)
    with pytest.raises(SrqError, match="unused"):
        quantize_model(copy.deepcopy(net), QuantConfig(), batches())
    qnet, plan = quantize_model(net, QuantConfig(skip=["unused"]), batches())
    assert type(qnet.unused) is nn.Linear and "unused" not in [lb.name for lb in plan]


def test_no_calibration_batches_raises():
    with pytest.raises(SrqError):
        quantize_model(make_net(), QuantConfig(), [])


# ------------------------------------------------------------------ state_dict, accuracy

def test_float_state_dict_loads_into_quantized_model():
    float_net, qnet, _ = quantize(QuantConfig(weight_bits=4, act_bits=4))
    float_sd = float_net.state_dict()
    for key, value in float_sd.items():  # surgery keeps the float tensors untouched
        assert torch.equal(qnet.state_dict()[key], value), key
    fresh = make_net(seed=5)
    fresh_q, _ = quantize_model(fresh, QuantConfig(weight_bits=4, act_bits=4), batches())
    result = fresh_q.load_state_dict(float_sd, strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys
    assert all(".weight_quant." in k or ".input_quant." in k or ".output_quant." in k for k in result.missing_keys)
    for key, value in float_sd.items():
        assert torch.equal(fresh_q.state_dict()[key], value), key
    # and the quantized state_dict round-trips into a quantized model strictly
    again, _ = quantize_model(make_net(seed=6), QuantConfig(weight_bits=4, act_bits=4), batches())
    again.load_state_dict(qnet.state_dict())


def test_w8a8_output_close_to_float():
    float_net, qnet, _ = quantize(QuantConfig(weight_bits=8, act_bits=8))
    x = batches(2, seed=9)
    qnet.eval()
    with torch.no_grad():
        for xb in x:
            ref = float_net(xb)
            out = qnet(xb)
            rel = float((out - ref).norm() / ref.norm())
            assert rel < 0.02, rel
    # 2 bits is visibly coarser than 8 (the comparison is sensitive to the bit-width)
    float4, q4, _ = quantize(QuantConfig(weight_bits=2, act_bits=2))
    q4.eval()
    with torch.no_grad():
        rel4 = float((q4(x[0]) - float4(x[0])).norm() / float4(x[0]).norm())
    assert rel4 > 2 * rel


@pytest.mark.parametrize("per_channel", [False, True])
def test_two_bit_model_trains(per_channel):
    _, qnet, _ = quantize(QuantConfig(weight_bits=2, act_bits=2, per_channel=per_channel))
    qnet.train()
    x = batches(1, seed=3)[0]
    loss = qnet(x).square().mean()
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in qnet.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    for name, m in quant_layers(qnet):
        assert m.weight.grad.abs().sum() > 0, name
        assert m.weight_quant.log_alpha.grad.abs().sum() > 0, name


def test_per_channel_steps():
    _, qnet, _ = quantize(QuantConfig(weight_bits=4, act_bits=4, per_channel=True))
    for name, m in quant_layers(qnet):
        c = m.weight.shape[0]
        expected = (c, 1, 1, 1) if isinstance(m, QuantConv2d) else (c, 1)
        assert tuple(m.weight_quant.alpha.shape) == expected, name
        assert tuple(m.weight_quant.sigma.shape) == expected, name
        assert m.weight_quant.encoding().per_channel
        assert m.input_quant.alpha.dim() == 0  # activations stay per-tensor
        # each channel's step is initialised from that channel
        assert m.weight_quant.alpha.detach().flatten().unique().numel() > 1, name
    _, qnet_t, _ = quantize(QuantConfig(weight_bits=4, act_bits=4))
    for name, m in quant_layers(qnet_t):
        assert m.weight_quant.alpha.dim() == 0, name
