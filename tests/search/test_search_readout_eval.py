"""The per-epoch read-out evaluation of the search: own BatchNorm statistics, nothing disturbed."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from srqcli.search.workflow import _readout_eval
from srqcli.train.loop import evaluate, reestimate_batchnorm

torch.set_num_threads(1)


def _job() -> SimpleNamespace:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 1, 6, 6, generator=g), torch.randint(0, 3, (96,), generator=g)
    gen = torch.Generator().manual_seed(7)
    train = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=8, shuffle=True, generator=gen)
    val = DataLoader(TensorDataset(x[64:], y[64:]), batch_size=8)
    return SimpleNamespace(train_loader=train, val_loader=val, device=torch.device("cpu"),
                           amp=False, reporter=None)


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    bn = model[1]
    bn.running_mean.fill_(50.0)  # statistics that do not describe the network (as after gating)
    bn.running_var.fill_(0.01)
    bn.num_batches_tracked.fill_(123)
    return model


def test_readout_eval_uses_reestimated_statistics_and_restores_everything():
    job, model = _job(), _model()
    bn_before = {k: v.clone() for k, v in model[1].state_dict().items()}
    rng_before = job.train_loader.generator.get_state()

    metrics = _readout_eval(job, model, bn_batches=4)

    for k, v in model[1].state_dict().items():
        assert torch.equal(v, bn_before[k]), k
    assert torch.equal(job.train_loader.generator.get_state(), rng_before)
    # The same as re-estimating on a copy from the same loader state, then evaluating.
    reference = copy.deepcopy(model)
    reestimate_batchnorm(reference, job.train_loader, job.device, 4)
    expected = evaluate(reference, job.val_loader, job.device)
    assert metrics.loss == expected.loss and metrics.top1 == expected.top1
    # ... and not what the stale statistics give.
    assert evaluate(model, job.val_loader, job.device).loss != expected.loss
