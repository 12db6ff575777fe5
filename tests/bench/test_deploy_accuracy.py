"""The deployed-accuracy benchmark's measures and its BENCHMARKS.md section (no training)."""

from __future__ import annotations

import torch

from benchmarks import render
from benchmarks.deploy_accuracy import agreement, top1


def test_top1_and_agreement_count_images():
    a = torch.tensor([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 2.0], [0.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    assert top1(a, torch.tensor([1, 0, 1, 1])) == 75.0
    assert agreement(a, b) == {"top1_agreement": 75.0, "differing_images": 1}


def _row(fake: float, deploy: float, differ: int, refused: bool = False) -> dict:
    row = {"integer_ops": {"QGemm": 1, "QLinearConv": 21}, "deploy_fused_layers": 22,
           "fake_quant_top1": fake, "deploy_top1": deploy, "ort_top1": deploy,
           "deploy_minus_fake_quant": round(deploy - fake, 2),
           "ort_vs_deploy": {"top1_agreement": 100.0 - differ / 100, "differing_images": differ,
                             "identical_logit_images": 99.99},
           "fake_quant_vs_deploy": {"top1_agreement": 98.5, "differing_images": 150},
           "srq_quantize_reported": {"top1": fake, "deployed_top1": deploy, "epoch_seconds": [300.0, 220.0],
                                     "seconds": 900.0},
           "seconds_fake_quant": 60.0, "seconds_deploy": 300.0, "seconds_ort": 30.0,
           "load_average": {"before": [3.5, 3.0, 3.0], "after": [5.0, 4.0, 4.0]}}
    if refused:
        row["export_refused"] = "verification FAILED"
    return row


def test_section_states_each_target_and_the_command(monkeypatch):
    result = {"env": {"machine": "x86_64", "python": "3.11", "torch": "2", "srq": "0.1.0", "threads": 1,
                      "cuda": None, "git_commit": "abc1234", "command": "python -m benchmarks.deploy_accuracy"},
              "settings": {"pretrain_epochs": 1, "pretrain_limit": 20000, "epochs": 2, "lr": 0.001,
                           "quant_lr": 0.001, "train_limit": 10000, "output_bits": 8, "variant": "lsb",
                           "drop_rate": 0.05, "seed": 0},
              "float_checkpoint": "f.safetensors",
              "runs": {"w4a4": _row(81.0, 81.14, 0, refused=True), "w3a3": _row(80.0, 80.05, 2)}}
    monkeypatch.setattr(render, "_load", lambda name: result if name == "deploy_accuracy" else None)
    text = "\n".join(render.deploy_section())
    assert ("`python -m benchmarks.deploy_accuracy --pretrain-epochs 1 --pretrain-limit 20000 --epochs 2 "
            "--lr 0.001 --quant-lr 0.001 --train-limit 10000 --bits 4 3`") in text
    assert "| W4A4 | 81.00 | 81.14 | +0.14 | no | 81.14 | 100.00% (0 differ) | yes |" in text
    assert "| W3A3 | 80.00 | 80.05 | +0.05 | yes | 80.05 | 99.98% (2 differ) | no |" in text
    assert "**W4A4: `srq export` refused the file** (verification FAILED)" in text
    assert "a fixed 20000-image subset of the training split" in text
