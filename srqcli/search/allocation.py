"""The allocation file: per-layer bits in the format ``srq quantize --bit-config`` reads.

::

    # srq search-bits: lenet5, strategy learned, budget avg_weight_bits=3.0 …
    [layers]
    "conv1" = { weight_bits = 4, act_bits = 8 }
    "fc3" = { weight_bits = 2, act_bits = 4 }

Every quantized layer is listed (pinned ones too) with its weight and activation bits, so the
fixed-bit fine-tune reproduces the searched size and BOPs exactly. Metadata is kept in comments
only: the file is nothing but a ``[layers]`` table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import tomllib

from srqcli.errors import SrqError
from srqcli.io.atomic import write_text_atomic
from srqcli.nn.surgery import LayerBits
from srqcli.workflow import rundir

ALLOCATION_TOML = rundir.ALLOCATION


def allocation_toml(plan: Sequence[LayerBits], header: Sequence[str] = ()) -> str:
    lines = [f"# {h}" for h in header]
    lines.append("[layers]")
    for lb in plan:
        lines.append(f"{json.dumps(lb.name)} = {{ weight_bits = {int(lb.weight_bits)}, "
                     f"act_bits = {int(lb.act_bits)} }}")
    return "\n".join(lines) + "\n"


def write_allocation(path: str | os.PathLike, plan: Sequence[LayerBits],
                     header: Sequence[str] = ()) -> Path:
    """Write the allocation TOML atomically; returns the path."""
    write_text_atomic(path, allocation_toml(plan, header))
    return Path(path)


def read_allocation(path: str | os.PathLike) -> dict[str, Mapping[str, int]]:
    """``{layer: {"weight_bits": …, "act_bits": …}}`` from an allocation (bit config) file.

    The one reader of ``[layers]`` files: ``srq quantize --bit-config`` and the benchmarks use it.
    """
    p = Path(path)
    if not p.is_file():
        raise SrqError(f"bit config not found: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SrqError(f"bit config {p} is not valid TOML: {exc}") from exc
    layers = data.get("layers")
    if not isinstance(layers, dict) or not layers:
        raise SrqError(f"bit config {p} needs a [layers] table: \"name\" = {{ weight_bits = 3 }}")
    for name, bits in layers.items():
        if not isinstance(bits, dict):
            raise SrqError(f"bit config {p}: layers.{name} must be a table like {{ weight_bits = 3 }}")
    return layers
