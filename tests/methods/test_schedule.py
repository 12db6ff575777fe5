"""Temperature annealing and the method registry."""

from __future__ import annotations

import pytest
import torch

from srqcli.config import QuantConfig
from srqcli.methods.dq import DQActQuantizer, DQWeightQuantizer
from srqcli.methods.lsq import LSQQuantizer
from srqcli.methods.registry import make_quantizer
from srqcli.methods.rq import RQQuantizer
from srqcli.methods.schedule import TemperatureSchedule
from srqcli.methods.slb import SLBWeightQuantizer
from srqcli.methods.ste import STEQuantizer
from srqcli.nn.quantizer import SRQQuantizer


def test_exponential_decay_from_start_to_end():
    q = RQQuantizer(3, True)
    s = TemperatureSchedule([q], 2.0, 0.5)
    assert q.temperature == 2.0
    assert s.temperature_at(0, 0.0, 4) == 2.0
    assert s.temperature_at(1, 1.0, 4) == pytest.approx(1.0)  # halfway: sqrt(start·end)
    s.hook(3, 4)(1.0)
    assert q.temperature == pytest.approx(0.5)


def test_attach_only_for_annealed_methods_with_user_override():
    model = torch.nn.Sequential(RQQuantizer(3, True), SRQQuantizer(3, True))
    assert TemperatureSchedule.attach(model, QuantConfig(method="srq")) is None
    s = TemperatureSchedule.attach(model, QuantConfig(method="rq", temperature_end=0.1))
    assert len(s.quantizers) == 1 and (s.start, s.end) == (2.0, 0.1)


@pytest.mark.parametrize("method,weight,act", [
    ("srq", SRQQuantizer, SRQQuantizer), ("rq", RQQuantizer, RQQuantizer),
    ("lsq", LSQQuantizer, LSQQuantizer), ("ste", STEQuantizer, STEQuantizer),
    ("slb", SLBWeightQuantizer, LSQQuantizer), ("dq", DQWeightQuantizer, DQActQuantizer)])
def test_registry_classes(method, weight, act):
    cfg = QuantConfig(method=method)
    shape = torch.Size([4, 2, 3, 3])
    assert type(make_quantizer(cfg, 3, activation=False, channels=None, shape=shape)) is weight
    assert type(make_quantizer(cfg, 3, activation=True, channels=None, shape=shape)) is act
