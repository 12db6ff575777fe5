"""Accuracy of the deploy model (the file ``srq export`` writes), beside the trained model's.

``srq quantize`` and ``srq eval`` report both while they differ: the trained (fake-quant)
model rounds with float biases and PyTorch's float convolutions, the deployed file with
int32 biases and onnxruntime's integer kernels (:mod:`srqcli.deploy`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from srqcli.io.quantized import ModelInfo
from srqcli.train.loop import EvalMetrics, evaluate
from srqcli.train.progress import Reporter


def evaluate_deployed(model: nn.Module, info: ModelInfo, loader: DataLoader,
                      reporter: Reporter | None = None) -> tuple[EvalMetrics | None, str | None]:
    """Metrics of ``model``'s deploy model on ``loader`` (on the CPU, where onnxruntime runs
    it), or ``None`` and why the model cannot be deployed. ``model`` stays on its device."""
    from srqcli.deploy.build import deploy_model_or_reason  # onnx: imported when needed
    from srqcli.export.workflow import input_shape

    device = next(model.parameters()).device
    try:
        deploy, why = deploy_model_or_reason(model, input_shape(info))
    finally:
        model.to(device)
    if deploy is None:
        return None, why
    return evaluate(deploy, loader, torch.device("cpu"), reporter=reporter, label="deployed eval"), None
