"""The user's own model code as MODEL: a Python import path, ``package.module:factory``.

A model that is neither a built-in nor a torchvision classifier exists as the user's code;
srq imports the module, calls the factory or class (with ``num_classes`` and ``in_channels``
when its signature has them: the counts srq would build any architecture with) and needs an
``nn.Module`` back, whose ``nn.Conv2d``/``nn.Linear`` layers it quantizes like any other.

Importing runs the module's code, so srq imports only a path the user typed on this command
line (:func:`load_factory`). A run made this way records the path as its architecture; a saved
file alone never makes srq import anything: rebuilding it (``srq eval``/``srq export`` of the
run) needs the path named again (``--arch``), or fails with one line saying so.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from srqcli.errors import SrqError, short_reason

_IDENT = r"[A-Za-z_]\w*"
_IMPORT_PATH = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*")
#: The sizes srq passes to a factory that takes them, by parameter name.
_SIZE_PARAMETERS = ("num_classes", "in_channels")
#: Import paths named on this command line, and what they name.
_named: dict[str, Callable[..., Any]] = {}


def is_import_path(name: str) -> bool:
    """Whether ``name`` is ``package.module:attribute`` (no file or architecture name has a
    colon between identifiers)."""
    return _IMPORT_PATH.fullmatch(name.strip()) is not None


def folder_name(arch: str) -> str:
    """``arch`` as part of a run folder's name (a colon is not allowed in every file system)."""
    return arch.replace(":", ".")


def load_factory(spec: str) -> Callable[..., Any]:
    """Import the module of ``spec`` (the user named it: its code may run) and return the
    class or function it names; one-line :class:`SrqError` when it cannot.

    The working directory is importable, as it is for ``python -m``: the user's own package
    usually lives there, and the ``srq`` script would not see it otherwise.
    """
    spec = spec.strip()
    if spec in _named:
        return _named[spec]
    module_name, _, attribute = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise SrqError(f"cannot import {module_name} (MODEL {spec}): {short_reason(exc)}; run srq "
                       "from the folder that holds it, or add that folder to PYTHONPATH") from exc
    except Exception as exc:  # the user's module failed while running: its error, in one line
        raise SrqError(f"importing {module_name} (MODEL {spec}) failed: {type(exc).__name__}: "
                       f"{short_reason(exc)}") from exc
    factory: Any = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            names = [n for n in dir(factory) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise SrqError(f"{module_name} has no {attribute} (MODEL {spec}){hint}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise SrqError(f"{spec} is a {type(factory).__name__}, not a class or function that "
                       "builds the model")
    _named[spec] = factory
    return factory


def build_user_model(spec: str, num_classes: int, in_channels: int) -> nn.Module:
    """Call the factory of ``spec``, which must have been named on the command line."""
    spec = spec.strip()
    factory = _named.get(spec)
    if factory is None:
        raise SrqError(f"the model is built by user code ({spec}), which srq imports only when it "
                       f"is named on the command line: name it again (--arch {spec}, or as MODEL)")
    sizes = {"num_classes": num_classes, "in_channels": in_channels}
    kwargs = {name: sizes[name] for name in _accepted(factory)}
    call = f"{spec}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
    try:
        model = factory(**kwargs)
    except Exception as exc:  # the user's code failed: its error, in one line
        raise SrqError(f"{call} failed: {type(exc).__name__}: {short_reason(exc)} (srq passes no "
                       f"other arguments)") from exc
    if not isinstance(model, nn.Module):
        raise SrqError(f"{call} returned a value of type {type(model).__name__}, not a torch "
                       "nn.Module: MODEL must name a class or function that builds the model")
    return model


def check_user_model(spec: str, model: nn.Module, num_classes: int, in_channels: int,
                     image_size: int) -> None:
    """One forward of a zero image: the user's model must take the data's images and give one
    output per class (a built-in architecture is built to; user code may not be)."""
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, in_channels, image_size, image_size))
    except Exception as exc:  # noqa: BLE001 (any failure of user code is the user's to fix)
        raise SrqError(f"{spec} cannot run on the data's {in_channels}×{image_size}×{image_size} "
                       f"images: {type(exc).__name__}: {short_reason(exc)}") from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.shape != (1, num_classes):
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SrqError(f"{spec} gives {shape} for one image, but the data has {num_classes} classes: "
                       f"it must return [batch, {num_classes}] logits (srq passes num_classes to a "
                       "factory that takes it)")


def _accepted(factory: Callable[..., Any]) -> list[str]:
    """The size parameters ``factory`` takes by name (none when its signature is unknown)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return []
    return [name for name in _SIZE_PARAMETERS if name in parameters
            and parameters[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                          inspect.Parameter.KEYWORD_ONLY)]
