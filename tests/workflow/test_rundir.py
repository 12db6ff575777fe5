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
