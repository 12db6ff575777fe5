"""Every bad input ends in one line on stderr, exit code 2, and nothing left on disk."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from report.report_testutil import save_lenet_run
from typer.testing import CliRunner

from srqcli.cli import app
from srqcli.models import build_model

runner = CliRunner()
QUICK = ["--epochs", "1", "--pretrain-epochs", "1", "--quiet"]


def _one_error_line(res, expect: str) -> str:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error:") and expect in lines[0], lines[0]
    return lines[0]


def _fails_cleanly(args, out, expect: str):
    line = _one_error_line(runner.invoke(app, args), expect)
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*")), list(out.rglob("*"))
    return line


def test_missing_checkpoint(tmp_path):
    out = tmp_path / "run"
    _fails_cleanly(["quantize", "lenet5", "--data", "example", "-c", str(tmp_path / "nope.pt"),
                    "--out", str(out), *QUICK], out, "not found")


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    out = tmp_path / "run"
    _fails_cleanly(["quantize", "lenet5", "--data", "example", "-c", str(bad), "--out", str(out),
                    *QUICK], out, "bad.pt")


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save(build_model("lenet5", 10, 1).state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    out = tmp_path / "run"
    _fails_cleanly(["quantize", "lenet5", "--data", "example", "-c", str(path), "--out", str(out),
                    *QUICK], out, "cut.pt")


def test_state_dict_of_another_architecture(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save(build_model("resnet20", 10, 1).state_dict(), path)
    out = tmp_path / "run"
    _fails_cleanly(["quantize", "lenet5", "--data", "example", "-c", str(path), "--out", str(out),
                    *QUICK], out, "does not fit lenet5")


@pytest.mark.parametrize("flag,value", [("--bits", "1"), ("--bits", "9"), ("--weight-bits", "0"),
                                        ("--act-bits", "12"), ("--first-last-bits", "1")])
def test_bits_out_of_range(tmp_path, flag, value):
    out = tmp_path / "run"
    _fails_cleanly(["quantize", "example", flag, value, "--out", str(out), *QUICK], out,
                   "between 2 and 8")


@pytest.mark.parametrize("flag,value,expect", [
    ("--lr", "-1", "train.lr must be in [0, 10], got -1.0"),
    ("--quant-lr", "-1", "train.quant_lr must be in [0, 10], got -1.0"),
    ("--lr", "nan", "train.lr must be in [0, 10], got nan"),
    ("--drop-rate", "1.5", "dropbits.rate must be in [0, 1), got 1.5"),
    ("--epochs", "-1", "train.epochs must be at least 0, got -1"),
    ("--batch-size", "0", "data.batch_size must be at least 1, got 0"),
    ("--workers", "-1", "data.workers must be at least 0, got -1"),
    ("--calib-batches", "0", "data.calib_batches must be at least 1, got 0"),
    ("--pretrain-epochs", "-2", "model.pretrain_epochs must be at least 0, got -2"),
    ("--num-classes", "0", "model.num_classes must be at least 2, got 0"),
    ("--checkpoint-every", "-5", "train.checkpoint_every must be at least 0, got -5"),
    ("--seed", "-1", "train.seed must be between 0 and 4294967295, got -1"),
])
def test_numeric_option_out_of_range(tmp_path, flag, value, expect):
    """Before: --lr -1 was a torch traceback and --quant-lr -1 a silent 10% run (issue 15)."""
    out = tmp_path / "run"
    _fails_cleanly(["quantize", "example", "--out", str(out), *QUICK, flag, value], out, expect)


def test_empty_data_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "run"
    _fails_cleanly(["quantize", "lenet5", "--data", str(data), "--out", str(out), *QUICK], out,
                   "neither")


def test_malformed_data_folder(tmp_path):
    data = tmp_path / "data"
    (data / "train" / "cat").mkdir(parents=True)
    (data / "train" / "cat" / "x.png").write_bytes(b"not a png")
    out = tmp_path / "run"
    _fails_cleanly(["quantize", "lenet5", "--data", str(data), "--out", str(out), *QUICK], out,
                   str(data))


def test_missing_data_folder(tmp_path):
    out = tmp_path / "run"
    _fails_cleanly(["quantize", "lenet5", "--data", str(tmp_path / "nowhere"), "--out", str(out),
                    *QUICK], out, "does not exist")


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "run"  # parent is a regular file: never writable, even as root
    _fails_cleanly(["quantize", "example", "--out", str(out), *QUICK], out, "not writable")
    assert blocker.read_text() == "x"


def test_existing_output_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    res = runner.invoke(app, ["quantize", "example", "--out", str(out), *QUICK])
    assert res.exit_code == 2 and "--overwrite" in res.stderr
    assert (out / "keep.txt").read_text() == "precious"


def test_no_checkpoint_and_no_pretraining(tmp_path):
    out = tmp_path / "run"
    _fails_cleanly(["quantize", "lenet5", "--data", "example", "--out", str(out), "--epochs", "1",
                    "--quiet"], out, "--checkpoint")


def test_resume_without_checkpoint(tmp_path):
    out = tmp_path / "run"
    _fails_cleanly(["quantize", "example", "--out", str(out), "--resume", *QUICK], out,
                   "nothing to resume")


def test_unknown_architecture(tmp_path):
    out = tmp_path / "run"
    _fails_cleanly(["quantize", "resnet2", "--data", "example", "--out", str(out), *QUICK], out,
                   "unknown architecture")


def test_eval_bad_targets(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00" * 10)
    res = runner.invoke(app, ["eval", str(bad), "--data", "example", "--quiet"])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["eval", str(empty), "--data", "example", "--quiet"])
    assert res.exit_code == 2 and "not an srq run folder" in res.stderr
    res = runner.invoke(app, ["eval", "lenet5", "--data", "example", "--quiet"])
    assert res.exit_code == 2 and "--checkpoint" in res.stderr


@pytest.fixture
def rgb_digits(tmp_path):
    """An ImageFolder with the digits' 10 classes but RGB images (LeNet-5 on digits takes 1 channel)."""
    root = tmp_path / "rgb"
    for split in ("train", "val"):
        for label in range(10):
            (root / split / str(label)).mkdir(parents=True)
            Image.new("RGB", (8, 8), (25 * label, 0, 0)).save(root / split / str(label) / "0.png")
    return root


@pytest.mark.parametrize("command", [["eval"], ["export", "--format", "safetensors"]])
def test_data_with_another_channel_count(tmp_path, rgb_digits, command):
    run = save_lenet_run(tmp_path / "run").parent
    before = sorted(p.name for p in run.iterdir())
    res = runner.invoke(app, [command[0], str(run), *command[1:], "--data", str(rgb_digits)])
    _one_error_line(res, "takes 1-channel images but the data has 3 channels")
    assert sorted(p.name for p in run.iterdir()) == before
