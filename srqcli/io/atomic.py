"""Atomic file and directory writes.

Every output srq writes goes to a temporary name in the same directory and is renamed into
place only once complete, so a crash, a full disk or a permission error never leaves a
half-written file where a user (or a later ``--resume``) would read it, and the previous
version of the file stays as it was.

Writers go through a Python file object (:func:`atomic_file`) rather than a path: libraries
that write to a path themselves report a full disk in their own words (``torch.save``: "unexpected
pos 704 vs 598"; safetensors: a ``SafetensorError``), while through a file object the
operating system's ``OSError`` reaches :func:`atomic_path`, which turns it into one clear line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors.torch import save as _safetensors_save

from srqcli.errors import SrqError

# What to do about the OS errors a user can fix; others are reported with the OS's words only.
_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EACCES: "choose another output location or fix its permissions",
    errno.EPERM: "choose another output location or fix its permissions",
    errno.EROFS: "choose another output location",
}
_CHAIN_DEPTH = 8  # how far to follow __cause__/__context__ looking for the OS error


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The caller writes the complete file to the yielded path. On any exception the temporary
    file is removed and ``path`` is left untouched; an exception caused by the operating
    system (directly or as the cause of a library's error) becomes a one-line
    :class:`SrqError`.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600 files; outputs get the permissions any new file would get.
        tmp.chmod(_new_file_mode())
        yield tmp
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        os_error = _os_error(exc)
        if os_error is None:
            raise
        raise _write_error(target, os_error) from exc


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file object whose complete contents replace ``path`` on success."""
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        yield handle


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_file(path) as handle:
        handle.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` atomically, with a full disk reported as such."""
    with atomic_file(path) as handle:
        torch.save(obj, handle)


def save_safetensors_atomic(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
) -> None:
    """``safetensors.torch.save_file`` atomically, with a full disk reported as such.

    The file is serialized in memory first (srq's model files are small next to the RAM that
    trained them) so that the write itself is a plain Python write.
    """
    write_bytes_atomic(path, safetensors_bytes(dict(tensors), metadata=metadata))


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file's bytes, the same for the same tensors and metadata on every save.

    safetensors serializes ``__metadata__`` from a Rust hash map, in a new random order on each
    save (20 saves of one model gave 20 different files), so identical models hashed
    differently. The header is rewritten with the metadata keys sorted; the tensor entries,
    their offsets and the data are kept as they are.
    """
    raw = _safetensors_save(tensors, metadata=metadata)
    if not metadata:
        return raw
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8 bytes with spaces
    return len(text).to_bytes(8, "little") + text + raw[8 + size:]


def _new_file_mode() -> int:
    """``0o666`` minus the process umask, i.e. the mode ``open()`` would have used."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _os_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind ``exc``: itself, or what a library error was raised from."""
    current: BaseException | None = exc
    for _ in range(_CHAIN_DEPTH):
        if current is None:
            return None
        if isinstance(current, OSError):
            return current
        current = current.__cause__ or current.__context__
    return None


def _write_error(target: Path, exc: OSError) -> SrqError:
    """One line: which file, what the OS said and, when the user can fix it, how."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _HINTS.get(exc.errno) if exc.errno is not None else None
    kept = " (the previous file is unchanged)" if target.is_file() else ""
    return SrqError(f"cannot write {target}: {reason}{'; ' + hint if hint else ''}{kept}")
