"""Datasets and loaders: the built-in example, MNIST-style IDX folders and ImageFolder trees.

``load_datasets`` decides from ``DataSpec.source`` which kind it is; every kind returns a
:class:`DatasetBundle` whose samples are ``(normalized CHW float tensor, int label)``.
"""

from __future__ import annotations

from pathlib import Path

from srqcli.data.example import load_example
from srqcli.data.idx import find_idx_files, load_idx
from srqcli.data.imagefolder import is_imagefolder, load_imagefolder
from srqcli.data.loaders import make_loaders
from srqcli.data.spec import DatasetBundle, DataSpec
from srqcli.errors import SrqError

__all__ = ["DataSpec", "DatasetBundle", "is_imagefolder_source", "load_datasets", "make_loaders"]

EXAMPLE = "example"


def load_datasets(spec: DataSpec) -> DatasetBundle:
    """Load the train and held-out val splits ``spec.source`` points to."""
    if spec.source == EXAMPLE:
        return load_example(spec)
    path = Path(spec.source).expanduser()
    if not path.exists():
        raise SrqError(
            f"data source {path} does not exist; pass '{EXAMPLE}', a folder of MNIST-style IDX files "
            "or an ImageFolder folder with train/ and val/"
        )
    if not path.is_dir():
        raise SrqError(f"data source {path} is a file; pass the folder that contains the dataset")
    files = find_idx_files(path)
    if files is not None:
        return load_idx(path, files, spec)
    if is_imagefolder(path):
        return load_imagefolder(path, spec)
    raise SrqError(
        f"{path} is neither an IDX dataset (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, optionally .gz) nor an ImageFolder dataset "
        "(train/<class>/ and val/<class>/ with images)"
    )


def is_imagefolder_source(source: str) -> bool:
    """Whether :func:`load_datasets` reads ``source`` as an ImageFolder tree (in the same order:
    a folder of IDX files is IDX even if it also has a ``train/``)."""
    path = Path(source).expanduser()
    return (source != EXAMPLE and path.is_dir() and find_idx_files(path) is None
            and is_imagefolder(path))
