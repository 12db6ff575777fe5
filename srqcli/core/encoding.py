"""The frozen record of one quantizer: bits, signedness, step(s) and channel axis.

A trained quantizer (:class:`srqcli.nn.quantizer.Quantizer`) holds what is *learned*; this
record holds what is *deployed*, ``α·clamp(round(x/α), k_min, k_max)``, and nothing else.
Export, the packed file, the model file's metadata, ``srq.bit_allocation`` and the report all
read and write this one record, so the facts about a quantizer live in one place and a
consumer never rebuilds training quantizers (σ, temperatures, DropBits) to learn them.

Steps are float32, the precision the quantizers compute in. JSON stores each as the shortest
decimal that reads back as the same float32 (``0.0502``, not the double ``0.050200000405311584``:
half the bytes of a per-channel model's records), checked value by value, with the exact
double as fallback, so :meth:`Encoding.to_dict` → :meth:`Encoding.from_dict` is bit-exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from srqcli.core.grid import IntGrid


@dataclass(frozen=True, eq=False)
class Encoding:
    """One quantizer, frozen.

    ``step`` is a float32 CPU tensor: ``()`` per tensor, or ``(C,)`` per channel with ``axis``
    the channel axis of the quantized tensor (``None`` per tensor). Equality and hashing are by
    value, so layers sharing one input quantizer can be recognised (:mod:`srqcli.export.to_onnx`).
    """

    bits: int
    signed: bool
    step: Tensor
    axis: int | None = None

    def __post_init__(self) -> None:
        step = self.step.detach().to("cpu", torch.float32).clone()  # frozen: no view of a live tensor
        step = step.reshape(-1) if self.axis is not None else step.reshape(())
        object.__setattr__(self, "step", step)

    @property
    def grid(self) -> IntGrid:
        return IntGrid(self.bits, self.signed)

    @property
    def per_channel(self) -> bool:
        """More than one step (a per-channel quantizer of a one-channel tensor has one)."""
        return self.step.numel() > 1

    @property
    def scalar(self) -> float:
        """The single step as a Python float (the float32 value, exactly)."""
        if self.per_channel:
            raise ValueError("a per-channel encoding has no single step")
        return float(self.step.reshape(()))

    def broadcast_step(self, ndim: int) -> Tensor:
        """``step`` shaped to broadcast over a tensor of ``ndim`` dimensions."""
        if self.axis is None:
            return self.step
        shape = [1] * ndim
        shape[self.axis] = -1
        return self.step.reshape(shape)

    def _key(self) -> tuple:
        return self.bits, self.signed, self.axis, tuple(self.step.reshape(-1).tolist())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Encoding) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``step`` a number per tensor, a list per channel."""
        values = [_short(v) for v in self.step.reshape(-1).numpy()]
        step: float | list[float] = values if self.axis is not None else values[0]
        return {"bits": self.bits, "signed": self.signed, "step": step, "axis": self.axis}

    @classmethod
    def from_dict(cls, data: Any) -> Encoding:
        """Inverse of :meth:`to_dict`; ``ValueError`` (one line) for anything malformed."""
        if not isinstance(data, dict):
            raise ValueError(f"an encoding must be an object, got {type(data).__name__}")
        bits, signed, step, axis = (data.get(k) for k in ("bits", "signed", "step", "axis"))
        if type(bits) is not int or not 1 <= bits <= 16:
            raise ValueError(f"encoding bits must be an integer in 1..16, got {bits!r}")
        if type(signed) is not bool:
            raise ValueError(f"encoding signed must be true or false, got {signed!r}")
        if axis is not None and (type(axis) is not int or axis < 0):
            raise ValueError(f"encoding axis must be a non-negative integer or null, got {axis!r}")
        values = step if isinstance(step, list) else [step]
        if (axis is None) == isinstance(step, list) or not values or not all(
                type(v) in (int, float) and math.isfinite(v) and v > 0 for v in values):
            raise ValueError("encoding step must be a positive number (per tensor) or a list of "
                             "them with an axis (per channel)")
        return cls(bits, signed, torch.tensor(step, dtype=torch.float32), axis)


def _short(value: np.float32) -> float:
    """The shortest decimal that reads back as ``value`` through a double; else the double."""
    short = float(str(value))
    return short if np.float32(short) == value else float(value)


#: The quantizers of one layer, by role: its weight, its input and (``--output-bits``) its output.
ROLES = ("weight", "input", "output")


def layers_to_dict(layers: Mapping[str, Mapping[str, Encoding]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{layer: {role: record}}`` as JSON-ready data (layers and roles in their given order)."""
    return {name: {role: enc.to_dict() for role, enc in roles.items()} for name, roles in layers.items()}


def layers_from_dict(data: Any) -> dict[str, dict[str, Encoding]]:
    """Inverse of :func:`layers_to_dict`; ``ValueError`` naming the bad layer otherwise."""
    if not isinstance(data, dict):
        raise ValueError("the encodings must be an object of layers")
    layers = {}
    for name, roles in data.items():
        if not isinstance(roles, dict) or not {"weight", "input"} <= set(roles) <= set(ROLES):
            raise ValueError(f"layer {name}: expected the records {', '.join(ROLES)} (output optional)")
        try:
            layers[name] = {role: Encoding.from_dict(roles[role]) for role in ROLES if role in roles}
        except ValueError as exc:
            raise ValueError(f"layer {name}: {exc}") from None
    return layers
