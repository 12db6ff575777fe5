"""What a weights file is, told from its first bytes.

Loaders are chosen by content, not by the name's suffix (a ``.pt`` may hold safetensors), and a
file no loader can read gets srq's own one-line diagnosis from its bytes: torch's messages for
random bytes or a cut-off download talk about ``weights_only``, miniz and central directories,
and say nothing of what the file is.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

#: A zip archive's first bytes: torch.save's format, TorchScript and torch.export archives.
ZIP_MAGIC = b"PK\x03\x04"
#: The opcode every pickle of protocol ≥ 2 starts with (torch.save's legacy format).
PICKLE_PROTO = b"\x80"
_HEAD_BYTES = 16
#: Formats users mistake for checkpoints, by their magic bytes.
_OTHER_FORMATS = {
    b"\x89HDF\r\n\x1a\n": "an HDF5 file (a Keras .h5 model?)",
    b"\x1f\x8b": "a gzip archive (unpack it first)",
    b"\x93NUMPY": "a NumPy array file (.npy)",
}
#: An ONNX model is a protobuf whose first field is its IR version (tag 0x08).
_ONNX_START = b"\x08"


def head(file: Path, count: int = _HEAD_BYTES) -> bytes:
    """The first ``count`` bytes of ``file``."""
    with file.open("rb") as handle:
        return handle.read(count)


def looks_like_safetensors(file: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then the JSON header."""
    start = head(file)
    if len(start) < 9:
        return False
    length = int.from_bytes(start[:8], "little")
    return 0 < length <= file.stat().st_size - 8 and start[8:9] == b"{"


def diagnosis(file: Path) -> str:
    """Why no loader could read ``file``, in srq's words: one line saying what the file is."""
    start = head(file)
    if start.startswith(ZIP_MAGIC):
        if not zipfile.is_zipfile(file):
            return (f"{file} is cut short or damaged: it starts as a zip archive (the container of "
                    "torch.save, TorchScript and torch.export) but its end is missing; copy or save "
                    "it again")
        return (f"{file} is a zip archive but not an intact PyTorch, TorchScript or torch.export "
                "file (damaged, or written by another program)")
    if start.startswith(PICKLE_PROTO):
        return (f"{file} is cut short or damaged: it starts as a pickle (torch.save's legacy "
                "format) but does not read to its end; copy or save it again")
    what = next((name for magic, name in _OTHER_FORMATS.items() if start.startswith(magic)), None)
    if file.suffix.lower() == ".onnx" and start.startswith(_ONNX_START):
        what = "an ONNX model (srq starts from the PyTorch model: its state_dict or TorchScript)"
    if what is not None:
        return f"{file} is {what}, not a PyTorch, safetensors or TorchScript file"
    return (f"{file} is not a PyTorch, safetensors or TorchScript file (it starts with bytes "
            f"{start[:8].hex(' ')})")
