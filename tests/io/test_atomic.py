"""Tests for srqcli.io.atomic: outputs appear complete or not at all."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import leftovers
from safetensors.torch import load_file

from srqcli.errors import SrqError
from srqcli.io.atomic import (
    atomic_path,
    save_safetensors_atomic,
    save_torch_atomic,
    write_bytes_atomic,
    write_text_atomic,
)

TENSORS = {"w": torch.arange(4096, dtype=torch.float32)}
WRITERS = {
    "text": lambda path: write_text_atomic(path, "x" * 4096),
    "torch": lambda path: save_torch_atomic(TENSORS, path),
    "safetensors": lambda path: save_safetensors_atomic(TENSORS, path, {"k": "v"}),
}


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


def test_savers_write_files_their_libraries_read(tmp_path: Path) -> None:
    save_torch_atomic(TENSORS, tmp_path / "a.pt")
    save_safetensors_atomic(TENSORS, tmp_path / "a.safetensors")
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["w"], TENSORS["w"])
    assert torch.equal(load_file(tmp_path / "a.safetensors")["w"], TENSORS["w"])


def test_new_files_get_the_usual_permissions(tmp_path: Path) -> None:
    # mkstemp makes 0600 files; a model others should read must not stay private by accident.
    umask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("room", [0, 100])
def test_full_disk_keeps_previous_file(tmp_path: Path, full_disk, writer: str, room: int) -> None:
    """ENOSPC mid-write: one clear line, the old file byte for byte, no temporary file."""
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous good file")
    full_disk(room=room)
    with pytest.raises(SrqError) as info:
        WRITERS[writer](target)
    message = str(info.value)
    assert "\n" not in message and str(target) in message
    assert "No space left on device; free some space" in message and "previous file is unchanged" in message
    assert target.read_bytes() == b"previous good file"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_full_disk_on_a_new_file_leaves_nothing(tmp_path: Path, full_disk, writer: str) -> None:
    full_disk(room=10)
    with pytest.raises(SrqError, match="No space left on device") as info:
        WRITERS[writer](tmp_path / "new.bin")
    assert "previous file" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_permission_error_names_the_fix(tmp_path: Path, monkeypatch) -> None:
    # Root ignores permission bits, so the refusal is injected where the OS would raise it.
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    target = tmp_path / "model.safetensors"
    target.write_bytes(b"previous")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(SrqError, match="Permission denied; choose another output location"):
        save_safetensors_atomic(TENSORS, target)
    assert target.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [target]


def test_library_error_caused_by_the_os_is_reported_as_such(tmp_path: Path) -> None:
    # torch.save wraps a failed write in a RuntimeError whose context is the OSError.
    with (pytest.raises(SrqError, match="Read-only file system; choose another output location"),
          atomic_path(tmp_path / "x.pt")):
        try:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        except OSError:
            raise RuntimeError("unexpected pos 704 vs 598")  # what torch.save raises
    assert list(tmp_path.iterdir()) == []
