"""Smoke tests of the timing benchmarks on CPU (tiny inputs; the numbers mean nothing)."""

from __future__ import annotations

import json
import sys

import pytest

from benchmarks import common, step_time, throughput
from srqcli.methods.lsq import LSQQuantizer

pytestmark = pytest.mark.usefixtures("eager_srq")


def test_throughput_runs_on_cpu_and_writes_images_per_s(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", ["throughput", "--device", "cpu", "--batch", "2", "--size", "32",
                                      "--steps", "1", "--rounds", "1", "--warmup", "0", "--compile", "off"])
    throughput.main()
    r = json.loads((tmp_path / "throughput_resnet18_cpu.json").read_text())
    assert set(r["summary"]) == {"float", "srq", "lsq"}
    srq = r["summary"]["srq"]
    assert srq["images_per_s"] > 0 and srq["time_ratio_to_lsq"] > 0
    assert srq["imagenet_epoch_hours"] == pytest.approx(1_281_167 / srq["images_per_s"] / 3600)
    assert r["summary"]["float"]["time_ratio_to_float"] == 1.0


def test_step_time_lsq_configuration_is_lsq_on_the_same_model():
    model, *_ = step_time.build("lsq", "lenet5", 3, 4, 1, 28)
    assert any(isinstance(m, LSQQuantizer) for m in model.modules())
