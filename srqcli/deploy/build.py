"""The deploy model of a trained quantized model: the ONNX file ``srq export`` would write.

srq reports the accuracy of what it ships. The deploy model is therefore not rebuilt from the
training quantizers: it is the exported graph itself (built by the same function as
``srq export``'s file, :func:`srqcli.export.workflow.onnx_proto`), run by
:class:`srqcli.deploy.graph.DeployModel` with onnxruntime's integer arithmetic.
"""

from __future__ import annotations

from torch import nn

from srqcli.deploy.graph import DeployModel
from srqcli.errors import SrqError


def build_deploy_model(model: nn.Module, shape: tuple[int, ...]) -> DeployModel:
    """The default ``srq export`` (qdq layout) of ``model`` for NCHW inputs of ``shape``, as a
    :class:`DeployModel`; one-line :class:`SrqError` when the model cannot be exported."""
    from srqcli.export.workflow import onnx_proto

    proto, *_ = onnx_proto(model.eval().cpu(), shape)
    return DeployModel(proto)


def deploy_model_or_reason(model: nn.Module, shape: tuple[int, ...]) -> tuple[DeployModel | None, str | None]:
    """:func:`build_deploy_model`, or ``None`` and the reason in a few words (a model srq can
    train but not export, e.g. ``--method dq``'s non-uniform levels)."""
    try:
        return build_deploy_model(model, shape), None
    except SrqError as exc:
        return None, str(exc)
