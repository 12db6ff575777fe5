"""The latency helpers behind the export benchmarks (side-by-side rounds, op profile)."""

from __future__ import annotations

import copy

import pytest
import torch

from srqcli.export.bench import float_onnx, latency, latency_table, op_profile
from srqcli.export.demo import quantize_untrained, randomize_batchnorm
from srqcli.export.workflow import export_onnx
from srqcli.models import build_model

pytestmark = pytest.mark.usefixtures("eager_srq")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model("resnet20", 10, 3))
    shape = (1, 3, 8, 8)
    fl = float_onnx(copy.deepcopy(model), shape, tmp / "float.onnx")
    quantize_untrained(model, (4, 3, 8, 8), weight_bits=4, act_bits=4)
    q = export_onnx(model, None, tmp / "q.onnx", shape=shape, verify=False).path
    return {"float": fl, "qdq": q}


def test_latency_runs_every_model_each_round(models):
    times = latency(models, (2, 3, 8, 8), threads=1, warmup=1, rounds=3)
    assert set(times) == {"float", "qdq"} and all(len(t) == 3 and min(t) > 0 for t in times.values())


def test_latency_table_keys_and_base_speedup(models):
    table = latency_table(models, (3, 8, 8), batches=(1, 2), threads=1, rounds=2)
    assert set(table["latency_ms"]) == {f"{n}_b{b}" for n in models for b in (1, 2)}
    assert table["speedup"]["float_b1"] == 1.0 and table["speedup"]["qdq_b2"] > 0


def test_op_profile_names_the_executed_kernels(models):
    prof = op_profile(models["qdq"], (1, 3, 8, 8), threads=1, runs=2)
    assert "QLinearConv" in prof and all(ms >= 0 for ms in prof.values())
    assert list(prof.values()) == sorted(prof.values(), reverse=True)
