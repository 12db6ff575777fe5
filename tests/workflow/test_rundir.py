"""Run folders: what ``--resume`` and ``--overwrite`` find and clean up."""

from __future__ import annotations

from pathlib import Path

import pytest

from srqcli.errors import SrqError
from srqcli.workflow import rundir


def test_resume_removes_temporaries_a_killed_write_left(tmp_path: Path) -> None:
    checkpoint = tmp_path / rundir.RESUME
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"last good checkpoint")
    stray = checkpoint.parent / f".{checkpoint.name}.abc123.tmp"  # SIGKILL during the write
    stray.write_bytes(b"half")
    user_file = tmp_path / ".notes.tmp"  # not one of srq's outputs: left alone
    user_file.write_text("mine")
    rundir.prepare(tmp_path, resume=True, overwrite=False)
    assert not stray.exists()
    assert checkpoint.read_bytes() == b"last good checkpoint" and user_file.exists()


def test_overwrite_clears_outputs_and_their_temporaries(tmp_path: Path) -> None:
    (tmp_path / rundir.MODEL).write_bytes(b"old")
    (tmp_path / f".{rundir.MODEL}.x.tmp").write_bytes(b"half")
    (tmp_path / "keep.txt").write_text("user data")
    rundir.prepare(tmp_path, resume=False, overwrite=True)
    rundir.clear(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_resume_without_checkpoint_says_so(tmp_path: Path) -> None:
    with pytest.raises(SrqError, match="nothing to resume"):
        rundir.prepare(tmp_path, resume=True, overwrite=False)


def old_run(out: Path) -> dict[str, bytes]:
    """A finished run's outputs in ``out`` (checkpoint included), returned as name → bytes."""
    files = {rundir.MODEL: b"old model", rundir.RECIPE: b"old recipe", str(rundir.RESUME): b"old ckpt"}
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    return files


def contents(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def new_run_starts(out: Path) -> None:
    """What a new run writes before its first checkpoint."""
    (out / rundir.RECIPE).write_bytes(b"new recipe")
    (out / rundir.FLOAT).write_bytes(b"new float")


def test_overwrite_failing_before_a_checkpoint_restores_the_previous_run(tmp_path: Path) -> None:
    before = old_run(tmp_path)
    claim = rundir.Claim(tmp_path, resume=False, overwrite=True)
    assert not (tmp_path / rundir.MODEL).exists()  # the new run does not see the old outputs
    new_run_starts(tmp_path)
    assert "previous run, unchanged" in claim.fail()
    assert contents(tmp_path) == before


def test_overwrite_keeps_the_new_run_once_it_has_a_checkpoint(tmp_path: Path) -> None:
    old_run(tmp_path)
    claim = rundir.Claim(tmp_path, resume=False, overwrite=True)
    new_run_starts(tmp_path)
    (tmp_path / rundir.RESUME).write_bytes(b"new ckpt")
    assert "--resume" in claim.fail()
    assert contents(tmp_path) == {rundir.RECIPE: b"new recipe", rundir.FLOAT: b"new float",
                                  str(rundir.RESUME): b"new ckpt"}


def test_finished_overwrite_drops_the_previous_run(tmp_path: Path) -> None:
    old_run(tmp_path)
    claim = rundir.Claim(tmp_path, resume=False, overwrite=True)
    (tmp_path / rundir.MODEL).write_bytes(b"new model")
    claim.finish()
    assert contents(tmp_path) == {rundir.MODEL: b"new model"}


@pytest.mark.parametrize("checkpointed", [False, True])
def test_next_use_settles_an_overwrite_killed_outright(tmp_path: Path, checkpointed: bool) -> None:
    before = old_run(tmp_path)
    rundir.Claim(tmp_path, resume=False, overwrite=True)  # then SIGKILL: no fail(), no finish()
    new_run_starts(tmp_path)
    if checkpointed:
        (tmp_path / rundir.RESUME).write_bytes(b"new ckpt")
    rundir.prepare(tmp_path, resume=True, overwrite=False)
    expected = ({rundir.RECIPE: b"new recipe", rundir.FLOAT: b"new float",
                 str(rundir.RESUME): b"new ckpt"} if checkpointed else before)
    assert contents(tmp_path) == expected


def test_failed_fresh_run_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    claim = rundir.Claim(out, resume=False, overwrite=False)
    new_run_starts(out)
    assert "nothing was kept" in claim.fail()
    assert not out.exists()
