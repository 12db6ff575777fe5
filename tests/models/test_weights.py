"""``--weights ENUM``: torchvision weights from torch's hub cache, offline (srqcli/models/weights.py)."""

from __future__ import annotations

from urllib.error import URLError

import pytest
import torch
from typer.testing import CliRunner

from srqcli.cli import app
from srqcli.models import build_model

runner = CliRunner()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty hub cache, and no network: a download attempt fails as offline machines do."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)

    def offline(url, dst, *a, **k):
        raise URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.mark.slow
def test_weights_from_the_hub_cache_are_loaded(hub, tmp_path):
    """A weights file placed in the cache is what --weights loads (here ResNet-18 weights made
    for the 10 digit classes and 1 channel, under the name of torchvision's file)."""
    hub.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(build_model("resnet18", 10, 1).state_dict(), hub / "resnet18-f37072fd.pth")
    recipe = tmp_path / "small.toml"  # 32 px images, few of them: seconds, not minutes
    recipe.write_text("version = 1\n[data]\nimage_size = 32\ntrain_limit = 64\nval_limit = 64\n"
                      "batch_size = 32\ncalib_batches = 1\n[train]\nepochs = 0\n")
    res = runner.invoke(app, ["quantize", "resnet18", "--weights", "IMAGENET1K_V1", "--data", "example",
                              "--recipe", str(recipe), "--out", str(tmp_path / "run"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_missing_weights_offline_name_the_file_to_place(hub, tmp_path):
    res = runner.invoke(app, ["quantize", "resnet18", "--weights", "IMAGENET1K_V1", "--data", "example",
                              "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "resnet18-f37072fd.pth" in errors[0] and str(hub) in errors[0], res.output
    assert not (tmp_path / "run").exists() and not any(hub.glob("*"))


def test_unknown_weights_name_lists_the_choices(hub, tmp_path):
    res = runner.invoke(app, ["quantize", "resnet18", "--weights", "IMAGENET9K", "--data", "example",
                              "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "choose one of IMAGENET1K_V1, DEFAULT" in res.output, res.output
