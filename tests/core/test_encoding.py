"""The frozen quantizer record: JSON round trip bit for bit, grid, per-channel view."""

from __future__ import annotations

import json

import pytest
import torch

from srqcli.core.encoding import Encoding
from srqcli.core.grid import IntGrid


def _awkward_steps(n: int) -> torch.Tensor:
    """float32 steps whose shortest decimal is long (random mantissas, tiny and huge exponents)."""
    gen = torch.Generator().manual_seed(0)
    bits = torch.randint(0x00800000, 0x7F000000, (n,), generator=gen, dtype=torch.int32)
    return bits.view(torch.float32)


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_json_round_trip_is_bit_exact(axis):
    step = _awkward_steps(1 if axis is None else 20000).reshape(() if axis is None else -1)
    enc = Encoding(3, axis is not None, step, axis)
    back = Encoding.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert back == enc
    assert torch.equal(back.step.view(torch.int32), enc.step.view(torch.int32))
    assert back.step.dtype == torch.float32 and back.axis == axis


def test_record_is_a_frozen_float32_copy():
    live = torch.tensor([0.5, 0.25], dtype=torch.float64).reshape(2, 1)
    enc = Encoding(4, True, live, axis=0)
    live.mul_(2)
    assert enc.step.tolist() == [0.5, 0.25] and enc.step.dtype == torch.float32
    assert enc.per_channel and enc.grid == IntGrid(4, True)
    assert enc.broadcast_step(4).shape == (2, 1, 1, 1)
    assert Encoding(4, False, torch.tensor(0.5), axis=None).broadcast_step(4).shape == ()


def test_equality_is_by_value():
    a = Encoding(4, False, torch.tensor(0.5))
    assert a == Encoding(4, False, torch.tensor([0.5]))
    assert len({a, Encoding(4, False, torch.tensor(0.5))}) == 1
    assert a != Encoding(4, True, torch.tensor(0.5))
    assert a != Encoding(4, False, torch.tensor(0.25))


def test_scalar_refuses_several_steps():
    assert Encoding(8, True, torch.tensor(0.125)).scalar == 0.125
    with pytest.raises(ValueError):
        _ = Encoding(8, True, torch.tensor([0.1, 0.2]), axis=0).scalar


@pytest.mark.parametrize("data", [
    [], {"bits": 4, "signed": True, "axis": None},
    {"bits": "4", "signed": True, "step": 0.5, "axis": None},
    {"bits": 4, "signed": 1, "step": 0.5, "axis": None},
    {"bits": 4, "signed": True, "step": -0.5, "axis": None},
    {"bits": 4, "signed": True, "step": [0.5, 0.25], "axis": None},
    {"bits": 4, "signed": True, "step": 0.5, "axis": 0},
    {"bits": 4, "signed": True, "step": [], "axis": 0},
    {"bits": 4, "signed": True, "step": [0.5], "axis": -1},
])
def test_from_dict_refuses_malformed_records(data):
    with pytest.raises(ValueError):
        Encoding.from_dict(data)


def test_json_steps_are_short():
    """Each step as its shortest float32 decimal, not the 17 digits of its double."""
    enc = Encoding(4, True, torch.tensor([0.1, 0.0502], dtype=torch.float32), axis=0)
    assert json.dumps(enc.to_dict()["step"]) == "[0.1, 0.0502]"
