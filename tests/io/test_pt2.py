"""Weights of torch.export programs (.pt2) read without unpickling (srqcli/io/pt2.py)."""

from __future__ import annotations

import io
import json
import os
import shlex
import zipfile
from pathlib import Path

import pytest
import torch

from srqcli.errors import SrqError
from srqcli.io.checkpoint import read_state_dict, weights_kind
from srqcli.models import build_model


@pytest.fixture(scope="module")
def lenet_pt2(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = build_model("lenet5", 10, 1).eval()
    path = tmp_path_factory.mktemp("pt2") / "lenet.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 1, 28, 28),)), str(path))
    return path, model.state_dict()


def test_weights_are_the_models_state_dict(lenet_pt2):
    path, state = lenet_pt2
    read = read_state_dict(path)
    assert read.keys() == state.keys()
    assert all(torch.equal(read[k], v) for k, v in state.items())
    assert weights_kind(path) == "torch.export program"
    trusted = read_state_dict(path, trust_pickle=True)  # torch.export.load's own reading
    assert all(torch.equal(trusted[k], v) for k, v in state.items())


class _RunsCode:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_weight_stored_as_a_pickle_is_not_unpickled_without_trust(lenet_pt2, tmp_path):
    """torch.export.load would torch.load it with weights_only=False: code from the file runs."""
    path, _ = lenet_pt2
    sentinel = tmp_path / "SENTINEL"
    payload = io.BytesIO()
    torch.save(_RunsCode(f"touch {shlex.quote(str(sentinel))}"), payload)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(evil, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                config["config"]["conv1.weight"]["use_pickle"] = True
                data = json.dumps(config).encode()
            elif item.filename.endswith("data/weights/weight_0"):
                data = payload.getvalue()
            target.writestr(item, data)
    with pytest.raises(SrqError, match=r"evil\.pt2 stores weights as pickles \(conv1\.weight, …\), which "
                                       r"can run code when read: pass --trust-pickle"):
        read_state_dict(evil)
    assert not sentinel.exists()
