"""Write failures and damaged inputs through the real CLI: one line, exit 2, nothing half-done."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import leftovers
from PIL import Image
from report.report_testutil import save_lenet_run
from typer.testing import CliRunner

from srqcli.cli import app
from srqcli.models import build_model

runner = CliRunner()


def one_error_line(result, expect: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], result.stderr
    return lines[0]


@pytest.mark.parametrize("victim", ["report.json", "report.md", "bits.png"])
def test_full_disk_while_rewriting_a_report_keeps_the_old_one(tmp_path: Path, full_disk,
                                                            victim: str) -> None:
    run = tmp_path / "run"
    save_lenet_run(run)
    assert runner.invoke(app, ["report", str(run)]).exit_code == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    full_disk(victim, room=16)
    line = one_error_line(runner.invoke(app, ["report", str(run)]), f"cannot write {run / victim}")
    assert "No space left on device" in line and "previous file is unchanged" in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert leftovers(tmp_path) == []


def test_full_disk_on_a_fresh_quantize_run_leaves_no_folder(tmp_path: Path, full_disk) -> None:
    # recipe.toml is the first file a run writes, right after the data and weights are read.
    out = tmp_path / "run"
    full_disk("recipe.toml", room=0)
    result = runner.invoke(app, ["quantize", "example", "--out", str(out), "--epochs", "1",
                                 "--pretrain-epochs", "1", "--quiet"])
    one_error_line(result, "No space left on device")
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.fixture
def images_with_a_damaged_one(tmp_path: Path) -> tuple[Path, Path]:
    """An RGB ImageFolder whose val split has one cut-off PNG, and resnet20 weights for it."""
    root = tmp_path / "data"
    for split in ("train", "val"):
        for label, name in enumerate(("a", "b")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (12, 12), (100 * label, 50 * i, 30)).save(folder / f"{i}.png")
    damaged = root / "val" / "b" / "0.png"
    damaged.write_bytes(damaged.read_bytes()[:40])
    weights = tmp_path / "float.pt"
    torch.save(build_model("resnet20", 2, 3).state_dict(), weights)
    return root, weights


def test_eval_skips_an_unreadable_image_with_a_warning(images_with_a_damaged_one) -> None:
    root, weights = images_with_a_damaged_one
    result = runner.invoke(app, ["eval", "resnet20", "-c", str(weights), "--data", str(root),
                                 "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "skipped unreadable image" in result.stderr and "0.png" in result.stderr
    assert '"images": 4' in result.stdout  # replaced, not dropped: batches stay the same size


def test_eval_strict_fails_on_an_unreadable_image(images_with_a_damaged_one) -> None:
    root, weights = images_with_a_damaged_one
    result = runner.invoke(app, ["eval", "resnet20", "-c", str(weights), "--data", str(root),
                                 "--strict", "--quiet"])
    one_error_line(result, f"unreadable image {root / 'val' / 'b' / '0.png'}")


def test_strict_failure_in_a_fresh_quantize_run_leaves_no_folder(images_with_a_damaged_one,
                                                                 tmp_path: Path) -> None:
    # The damaged image is met after recipe.toml is written, before any resume checkpoint.
    root, _ = images_with_a_damaged_one
    damaged = root / "train" / "a" / "1.png"
    damaged.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('version = 1\n[model]\narch = "resnet20"\npretrain_epochs = 1\n'
                      "[data]\nimage_size = 8\nbatch_size = 2\ncalib_batches = 1\n"
                      "[train]\nepochs = 1\nfused = false\n")
    out = tmp_path / "run"
    result = runner.invoke(app, ["quantize", "resnet20", "--recipe", str(recipe), "--data",
                                 str(root), "--strict", "--out", str(out), "--quiet"])
    one_error_line(result, f"unreadable image {damaged}")
    assert not out.exists() and leftovers(tmp_path) == []


def test_existing_run_is_not_replaced_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"previous run")
    result = runner.invoke(app, ["quantize", "example", "--out", str(out), "--epochs", "1",
                                 "--pretrain-epochs", "1", "--quiet"])
    one_error_line(result, "is not empty; pass --overwrite")
    assert [p.name for p in out.iterdir()] == ["model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == b"previous run"
