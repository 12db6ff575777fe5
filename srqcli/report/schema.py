"""The bit-allocation report as data: typed records, ``report.json`` I/O and validation.

Schema ``"srq.bit-report"``, version :data:`SCHEMA_VERSION`; every field is documented in
``docs/report-schema.md``. Readers ignore keys they do not know (a later srq may add optional
fields without a version bump); removing, renaming or changing the meaning of a field bumps
the version, and :func:`read_report` refuses versions newer than its own.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srqcli.errors import SrqError, short_reason
from srqcli.io.atomic import write_text_atomic
from srqcli.preprocessing import Preprocessing

SCHEMA = "srq.bit-report"
SCHEMA_VERSION = 1

#: Budget kinds of ``srq search-bits`` (docs/method.md §6) and the total each is checked against.
BUDGET_KINDS = ("avg_weight_bits", "size_mb", "bops")


@dataclass
class LayerEntry:
    """One Conv2d/Linear layer: quantized, or left float (``quantized = False``, 32 bits)."""

    name: str
    type: str
    quantized: bool
    shape: list[int]
    groups: int
    params: int
    macs: int | None
    weight_bits: int
    act_bits: int
    weight_signed: bool | None
    act_signed: bool | None
    per_channel: bool | None
    weight_steps: list[float]
    weight_step_min: float | None
    weight_step_max: float | None
    act_step: float | None
    packed_bytes: int
    bops: int | None
    cluster_fraction: float | None
    clipped_fraction: float | None
    output_bits: int | None = None  # optional fields: added without a version change
    output_step: float | None = None


@dataclass
class Totals:
    quantized_layers: int
    float_layers: int
    quantized_params: int
    float_params: int
    float_bytes: int
    packed_bytes: int
    compression: float | None
    avg_weight_bits: float
    macs: int | None
    bops: int | None
    float_bops: int | None
    bops_reduction: float | None
    cluster_fraction: float | None


@dataclass
class Accuracy:
    float_top1: float | None = None
    quantized_top1: float | None = None


@dataclass
class Budget:
    """A budget stated by the user of ``srq search-bits`` and how the model meets it."""

    kind: str
    value: float
    achieved: float | None = None
    met: bool | None = None


@dataclass
class ModelFacts:
    arch: str | None = None
    num_classes: int | None = None
    in_channels: int | None = None
    image_size: int | None = None
    input_shape: list[int] | None = None
    preprocessing: Preprocessing | None = None  # optional: added without a version change


@dataclass
class BitReport:
    """The whole report; :meth:`to_dict` is exactly the content of ``report.json``."""

    srq_version: str
    model: ModelFacts
    layers: list[LayerEntry]
    totals: Totals
    accuracy: Accuracy = field(default_factory=Accuracy)
    budget: Budget | None = None
    source: str | None = None
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        head = {"schema": d.pop("schema"), "schema_version": d.pop("schema_version")}
        return {**head, **d}

    def to_json(self) -> str:
        try:
            return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        except ValueError as exc:  # a NaN/inf slipped into a float field: a bug, not user input
            raise ValueError(f"bit report has a non-finite number: {exc}") from exc

    @classmethod
    def from_dict(cls, data: Any, where: str = "report") -> BitReport:
        """Validate ``data`` (parsed ``report.json``) and build the report; SrqError if bad."""
        if not isinstance(data, dict):
            raise SrqError(f"{where} is not an srq bit report (expected a JSON object)")
        if data.get("schema") != SCHEMA:
            raise SrqError(f"{where} is not an srq bit report (schema {data.get('schema')!r}, "
                           f"expected {SCHEMA!r})")
        version = data.get("schema_version")
        if type(version) is not int or version < 1:
            raise SrqError(f"{where} has an invalid schema_version {version!r}")
        if version > SCHEMA_VERSION:
            raise SrqError(f"{where} uses bit-report schema version {version}, this srq reads "
                           f"up to {SCHEMA_VERSION}; upgrade srq")
        return _build(cls, data, where)


def finite(x: float | None) -> float | None:
    """``None`` for NaN/inf: JSON has no such numbers and the schema says null instead."""
    return None if x is None or not math.isfinite(x) else float(x)


def write_report_json(report: BitReport, path: str | os.PathLike) -> Path:
    """Write ``report.json`` atomically."""
    write_text_atomic(path, report.to_json())
    return Path(path)


def read_report(path: str | os.PathLike) -> BitReport:
    """Load and validate a ``report.json``; every problem is a one-line :class:`SrqError`."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise SrqError(f"bit report not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SrqError(f"{path} is not valid JSON: {short_reason(exc)}") from exc
    return BitReport.from_dict(data, str(path))


# --- validation: the dataclasses' type hints are the schema ------------------------------

def _build(cls: type, data: Any, where: str, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise SrqError(f"{where}: {prefix or 'the report'} must be an object")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name not in data:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise SrqError(f"{where}: {key} is missing")
        kwargs[f.name] = _value(hints[f.name], data[f.name], where, key)
    try:
        obj = cls(**kwargs)
    except SrqError as exc:  # a record that checks its own values (preprocessing)
        raise SrqError(f"{where}: {prefix}: {exc}") from None
    if isinstance(obj, Budget) and obj.kind not in BUDGET_KINDS:
        raise SrqError(f"{where}: {prefix}.kind must be one of {', '.join(BUDGET_KINDS)}, "
                       f"got {obj.kind!r}")
    return obj


def _value(hint: Any, value: Any, where: str, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, value, where, key)
    if origin in (list, tuple):  # a JSON array: list[X], or tuple[X, ...]
        if not isinstance(value, list):
            raise SrqError(f"{where}: {key} must be a list, got {type(value).__name__}")
        return origin(_value(args[0], v, where, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where, key)
    ok = {
        bool: lambda v: type(v) is bool,
        int: lambda v: type(v) is int,
        float: lambda v: type(v) in (int, float) and math.isfinite(v),
        str: lambda v: isinstance(v, str),
    }[hint](value)
    if not ok:
        what = {bool: "true or false", int: "an integer", float: "a finite number",
                str: "a string"}[hint]
        raise SrqError(f"{where}: {key} must be {what}, got {json.dumps(value)[:40]}")
    return float(value) if hint is float else value
