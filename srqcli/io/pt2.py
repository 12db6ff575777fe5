"""The weights of a ``torch.export`` program (``.pt2``), read without unpickling.

An exported program's graph calls ATen operators on its weights: the ``nn.Conv2d`` and
``nn.Linear`` modules srq puts quantizers on are gone (``program.module()`` holds plain
containers), so the graph itself cannot be quantized. Its state_dict keeps the original
module names, though, so srq reads the weights and treats the file like a state_dict: the
architecture is found from them (or given with ``--arch``).

``torch.export.load`` is not safe on untrusted files: it unpickles weights it stored as pickles
(``torch.load(weights_only=False)``) and opaque constants (``pickle.loads``), and falls back to
full unpickling for the sample inputs. So srq reads only the archive's weights: the JSON
config and the raw tensor bytes, refusing any weight stored as a pickle unless the user passed
``--trust-pickle`` (then ``torch.export.load`` reads the whole program).
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch

from srqcli.errors import SrqError, short_reason

#: The archive's ``<root>/archive_format`` record holds this for torch.export packages.
_PT2_FORMAT = b"pt2"
#: The name ``torch.export.save`` gives the one program of a file.
_MODEL = "model"


def is_pt2(file: Path) -> bool:
    """Whether ``file`` is a ``torch.export.save`` archive (its ``archive_format`` says ``pt2``)."""
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
            root = names[0].split("/")[0] if names else ""
            record = f"{root}/archive_format"
            return record in names and archive.read(record) == _PT2_FORMAT
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError, OSError):
        return False


def read_weights(file: Path, *, trust_pickle: bool) -> dict[str, torch.Tensor]:
    """The program's state_dict (parameters and persistent buffers, under their module names)."""
    if trust_pickle:
        return _load_program(file)
    from torch.export.pt2_archive import _package as package

    try:
        reader = package.PT2ArchiveReader(str(file))
        config_file = package.WEIGHTS_CONFIG_FILENAME_FORMAT.format(_MODEL)
        if config_file not in reader.get_file_names():
            raise SrqError(f"{file} is a torch.export archive in an older layout (its weights are one "
                           "pickle): pass --trust-pickle if you trust its source, or its state_dict")
        config = package._load_payload_config(reader, config_file)
        pickled = [name for name, meta in config.config.items() if meta.use_pickle]
        if pickled:
            raise SrqError(f"{file} stores weights as pickles ({pickled[0]}, …), which can run code "
                           "when read: pass --trust-pickle if you trust its source, or its state_dict")
        weights = package._load_state_dict(reader, _MODEL)
    except SrqError:
        raise
    except Exception as exc:  # a damaged archive, or a layout this torch does not know
        raise SrqError(f"{file} is a torch.export archive whose weights cannot be read "
                       f"({short_reason(exc)})") from exc
    return {name: tensor.detach() for name, tensor in weights.items()}


def _load_program(file: Path) -> dict[str, torch.Tensor]:
    """``torch.export.load``'s whole program (it unpickles: only with ``--trust-pickle``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its notes on the format's stability are noise here
            program = torch.export.load(str(file))
    except Exception as exc:  # the loader reports every defect as its own exception types
        raise SrqError(f"{file} is a torch.export archive that torch.export.load cannot read "
                       f"({short_reason(exc)})") from exc
    return {name: tensor.detach() for name, tensor in program.state_dict.items()}
