"""``--overwrite`` through the real CLI: the previous run survives until the new one can resume.

Ctrl-C is simulated by raising KeyboardInterrupt inside the running command, where a terminal's
SIGINT would surface it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from report.report_testutil import save_lenet_run
from typer.testing import CliRunner

from srqcli.cli import app
from srqcli.io.quantized import read_model_info
from srqcli.workflow import quantize as qmod
from srqcli.workflow import rundir

runner = CliRunner()


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (hidden ones included)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def finished_run(example_run: Path, tmp_path: Path) -> Path:
    """A private copy of the session's finished example run, for a command to overwrite."""
    return Path(shutil.copytree(example_run, tmp_path / "run"))


def overwrite(run: Path, start: Path, *extra: str):
    return runner.invoke(app, ["quantize", "example", "-c", str(start / rundir.FLOAT), "--epochs",
                               "1", "--bits", "3", "--out", str(run), "--overwrite", "--quiet",
                               *extra])


def interrupted_note(result) -> str:
    assert result.exit_code == 130, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), result.stderr
    return lines[0]


def test_overwrite_interrupted_before_a_checkpoint_keeps_the_previous_run(
        finished_run: Path, example_run: Path, monkeypatch) -> None:
    before = files(finished_run)

    def ctrl_c(*args, **kwargs):  # after recipe.toml is written: the reported data loss
        raise KeyboardInterrupt

    monkeypatch.setattr(qmod, "float_start", ctrl_c)
    result = overwrite(finished_run, example_run)
    assert files(finished_run) == before  # model, report, checkpoint: all of it, unchanged
    note = interrupted_note(result)
    assert "previous run" in note and "--resume" not in note
    monkeypatch.undo()
    # What the note promises: the run is still there for eval and report.
    assert runner.invoke(app, ["eval", str(finished_run), "--quiet"]).exit_code == 0
    assert runner.invoke(app, ["report", str(finished_run), "--no-chart"]).exit_code == 0


@pytest.mark.slow
def test_overwrite_interrupted_after_a_checkpoint_resumes_as_its_note_says(
        finished_run: Path, example_run: Path, monkeypatch, eager_srq) -> None:
    real_save = qmod._save_resume

    def save_then_ctrl_c(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(qmod, "_save_resume", save_then_ctrl_c)
    note = interrupted_note(overwrite(finished_run, example_run, "--checkpoint-every", "5"))
    assert "--resume" in note
    assert (finished_run / rundir.RESUME).is_file() and not (finished_run / rundir.MODEL).exists()
    monkeypatch.setattr(qmod, "_save_resume", real_save)
    result = overwrite(finished_run, example_run, "--checkpoint-every", "5", "--resume")
    assert result.exit_code == 0, result.output
    assert read_model_info(finished_run / rundir.MODEL).recipe.quant.weight_bits == 3  # the new run
    assert sorted(p.name for p in finished_run.iterdir() if p.name.startswith(".")) == []


def test_overwrite_refuses_a_checkpoint_it_would_set_aside(tmp_path: Path) -> None:
    run = save_lenet_run(tmp_path / "run", quantized=False).parent  # a float model.safetensors
    before = files(run)
    result = runner.invoke(app, ["quantize", "lenet5", "--data", "example", "-c",
                                 str(run / rundir.MODEL), "--out", str(run), "--overwrite", "--quiet"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (f"error: --checkpoint {run / rundir.MODEL} is a file of the run "
                                     f"that --overwrite replaces; copy it out of {run} first or "
                                     "choose another --out")
    assert files(run) == before
