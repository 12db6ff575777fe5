"""``srq quantize --resume`` through the real CLI: flags that contradict the saved run are
refused, and a finished run is left alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from srqcli.cli import app
from srqcli.workflow import rundir

runner = CliRunner()


def files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its inode and modification time: a rewrite changes them."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def finished_run(example_run: Path, tmp_path: Path) -> Path:
    """A private copy of the session's finished example run (W4A4, 2 epochs)."""
    return Path(shutil.copytree(example_run, tmp_path / "run"))


def resume(run: Path, *flags: str):
    return runner.invoke(app, ["quantize", "example", "--out", str(run), "--resume", "--quiet", *flags])


def test_resume_refuses_flags_that_contradict_the_run(finished_run: Path) -> None:
    before = files(finished_run)
    result = resume(finished_run, "--bits", "3", "--epochs", "5", "--lr", "0.01")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: --resume continues {finished_run} with the settings it was started with")
    assert "--bits 3 (the run's: 4)" in lines[0] and "--epochs 5 (the run's: 2)" in lines[0]
    assert "--lr 0.01 (the run's: " in lines[0]
    assert "--epochs cannot lengthen a run" in lines[0]
    assert files(finished_run) == before


def test_resume_of_a_finished_run_says_so_and_rewrites_nothing(finished_run: Path) -> None:
    before = files(finished_run)
    # flags equal to the run's are no conflict, the data path named another way neither
    result = resume(finished_run, "--bits", "4", "--epochs", "2", "--data", "example")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (f"{finished_run} is finished (2 epochs; {rundir.MODEL} written): "
                                     f"nothing to resume; srq eval {finished_run} evaluates it")
    assert files(finished_run) == before


@pytest.mark.parametrize("args, says", [
    (["--bits", "1"], "--bits: quant.weight_bits must be between 2 and 8"),
    (["--bits", "4", "--act-bits", "9"], "--act-bits: quant.act_bits must be between 2 and 8"),
    (["--weight-bits", "1"], "--weight-bits: quant.weight_bits must be between 2 and 8"),
])
def test_bits_error_names_the_flag_typed(tmp_path: Path, args: list[str], says: str) -> None:
    result = runner.invoke(app, ["quantize", "example", *args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert line.startswith(f"error: {says}") and "\n" not in line, line
    assert not (tmp_path / "r").exists()
