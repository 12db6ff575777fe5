"""Tests for srqcli.io.atomic: outputs appear complete or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from srqcli.errors import SrqError
from srqcli.io.atomic import atomic_path, write_bytes_atomic, write_text_atomic


def test_successful_write_replaces_target(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == tmp_path
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible until the block succeeds
    assert target.read_text() == "new"
    assert list(tmp_path.iterdir()) == [target]


def test_creates_missing_parent_directories(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.bin"
    write_bytes_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"


def test_write_text_atomic_uses_utf8(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    write_text_atomic(target, "2-bit ≈ 4× smaller")
    assert target.read_bytes().decode("utf-8") == "2-bit ≈ 4× smaller"


def test_exception_keeps_previous_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    target.write_text("previous")
    with pytest.raises(ValueError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise ValueError("boom")
    assert target.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [target]


def test_exception_without_previous_file_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "new.pt") as tmp:
            tmp.write_text("partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_unwritable_location_raises_srq_error(tmp_path: Path) -> None:
    # Tests run as root, so permissions cannot make a directory unwritable; a parent that is
    # a regular file fails for every user.
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("file")
    target = blocker / "out.txt"
    with pytest.raises(SrqError) as info:
        write_text_atomic(target, "data")
    assert str(target) in str(info.value)
    assert "\n" not in str(info.value)
    assert blocker.read_text() == "file"
    assert list(tmp_path.iterdir()) == [blocker]


def test_failed_rename_raises_srq_error_and_cleans_up(tmp_path: Path) -> None:
    # A directory in the target's place makes the final os.replace fail after the write.
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(SrqError, match="cannot write"):
        write_text_atomic(target, "data")
    assert list(tmp_path.iterdir()) == [target]
    assert (target / "keep").read_text() == "x"
