"""Budgets, pins and the exact cost of a bit allocation.

A budget is one of the report's kinds (:data:`srqcli.report.schema.BUDGET_KINDS`):

``avg_weight_bits``  ``--budget avg-bits=3.0``   mean weight bits over all quantized weights
``size_mb``          ``--budget size=1.5MB``     packed model size in 10⁶ bytes (as ``srq report``)
``bops``             ``--budget bops=1.2G``      Σ MACs × weight bits × activation bits

Costs are counted in exact integer *units* (bit-parameters, bytes, bit-operations), from the
same functions the report uses (:func:`~srqcli.report.stats.layer_stats`,
:func:`~srqcli.report.stats.model_totals`, :func:`~srqcli.report.stats.count_macs`), so an
allocation this module says meets the budget is one the report marks ``met``. The total is
``const + Σ_ℓ unit_cost(ℓ, b_ℓ)``: the part that does not depend on weight bits (float
parameters, steps, float layers' BOPs) is ``const``.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from srqcli.core.grid import MAX_BITS, MIN_BITS
from srqcli.errors import SrqError
from srqcli.nn.layers import is_quant_layer
from srqcli.report.stats import FLOAT_BITS, count_macs, layer_stats, model_totals

#: The final allocation must use at least this fraction of the budget (and never exceed it).
FILL = 0.98

_KIND_ALIASES = {
    "avg-bits": "avg_weight_bits", "avg_bits": "avg_weight_bits", "avg-weight-bits": "avg_weight_bits",
    "avg_weight_bits": "avg_weight_bits", "bits": "avg_weight_bits",
    "size": "size_mb", "size_mb": "size_mb", "size-mb": "size_mb",
    "bops": "bops",
}
_SIZE_UNITS = {"": 1.0, "mb": 1.0, "b": 1e-6, "kb": 1e-3, "gb": 1e3,
               "kib": 1024 / 1e6, "mib": 1024**2 / 1e6, "gib": 1024**3 / 1e6}
_COUNT_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")
_EXAMPLES = "avg-bits=3.0, size=1.5MB or bops=1.2G"


@dataclass(frozen=True)
class BudgetSpec:
    """A parsed ``--budget``: ``kind`` (a report budget kind) and ``value`` in its unit
    (bits, 10⁶ bytes, bit-operations)."""

    kind: str
    value: float

    def describe(self, value: float | None = None) -> str:
        v = self.value if value is None else value
        if self.kind == "avg_weight_bits":
            return f"{v:.3f} avg weight bits"
        if self.kind == "size_mb":
            return f"{v:.4f} MB"
        return f"{v / 1e9:.4f} GBOPs"


def parse_budget(text: str) -> BudgetSpec:
    """``"avg-bits=3.0"`` / ``"size=1.5MB"`` / ``"bops=1.2G"`` → :class:`BudgetSpec`.

    Sizes take B, KB, MB (default), GB, KiB, MiB, GiB; BOPs take K, M, G, T. Anything
    malformed is an :class:`SrqError` naming what is wrong.
    """
    kind_text, sep, value_text = str(text).partition("=")
    if not sep:
        raise SrqError(f"budget {text!r} must look like KIND=VALUE, e.g. {_EXAMPLES}")
    kind = _KIND_ALIASES.get(kind_text.strip().lower())
    if kind is None:
        raise SrqError(f"budget {text!r}: unknown kind {kind_text.strip()!r} "
                       f"(use avg-bits, size or bops, e.g. {_EXAMPLES})")
    m = _NUMBER.match(value_text)
    if not m:
        raise SrqError(f"budget {text!r}: {value_text.strip()!r} is not a positive number "
                       f"(e.g. {_EXAMPLES})")
    number, unit = float(m.group(1)), m.group(2).lower()
    units = {"avg_weight_bits": {"": 1.0}, "size_mb": _SIZE_UNITS, "bops": _COUNT_UNITS}[kind]
    if kind == "bops" and unit.endswith("bops"):
        unit = unit[:-4]
    if unit not in units:
        allowed = {"avg_weight_bits": "no unit", "size_mb": "B, KB, MB, GB, KiB, MiB, GiB",
                   "bops": "K, M, G, T"}[kind]
        raise SrqError(f"budget {text!r}: unknown unit {m.group(2)!r} ({allowed})")
    value = number * units[unit]
    if not math.isfinite(value) or value <= 0:
        raise SrqError(f"budget {text!r} must be a positive number")
    if kind == "avg_weight_bits" and value > FLOAT_BITS:
        raise SrqError(f"budget {text!r}: average weight bits must be at most {FLOAT_BITS}")
    return BudgetSpec(kind, value)


def parse_pins(text: str | Sequence[str] | None) -> dict[str, int]:
    """``"conv1=8,fc=8"`` (or a list of such strings) → ``{"conv1": 8, "fc": 8}``.

    Names are layer names or fnmatch patterns; bits must be in 2..8. Whether a name exists is
    checked against the model by :func:`check_pins`.
    """
    if text is None:
        return {}
    parts = [text] if isinstance(text, str) else list(text)
    pins: dict[str, int] = {}
    for item in (p.strip() for part in parts for p in part.split(",")):
        if not item:
            continue
        name, sep, bits = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SrqError(f"--pin {item!r} must look like LAYER=BITS, e.g. 'conv1=8,fc=8'")
        try:
            b = int(bits.strip())
        except ValueError:
            raise SrqError(f"--pin {item!r}: {bits.strip()!r} is not a whole number of bits") from None
        if not MIN_BITS <= b <= MAX_BITS:
            raise SrqError(f"--pin {item!r}: bits must be between {MIN_BITS} and {MAX_BITS}")
        pins[name] = b
    return pins


def check_pins(pins: Mapping[str, int], names: Sequence[str]) -> dict[str, int]:
    """Resolve pin patterns to layer names (later pins win); unknown name → SrqError."""
    resolved: dict[str, int] = {}
    for pattern, bits in pins.items():
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            listed = ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
            raise SrqError(f"--pin: no quantized layer is called {pattern!r} (layers: {listed})")
        for n in hits:
            resolved[n] = bits
    return resolved


@dataclass(frozen=True)
class LayerCost:
    """What the cost of one quantized layer depends on."""

    name: str
    params: int
    macs: int
    act_bits: int
    options: tuple[int, ...]  # allowed weight bits (one value when pinned)

    @property
    def pinned(self) -> bool:
        return len(self.options) == 1


@dataclass(frozen=True)
class CostModel:
    """Exact cost of an allocation ``{layer: weight bits}`` for one budget."""

    budget: BudgetSpec
    layers: tuple[LayerCost, ...]
    const: int  # units that do not depend on weight bits
    scale: float  # units per budget unit (avg: total params; size: 1e6 bytes; bops: 1)

    @classmethod
    def build(cls, model: nn.Module, budget: BudgetSpec, input_shape: Sequence[int] | None,
              min_bits: int, max_bits: int, pins: Mapping[str, int] | None = None) -> CostModel:
        """Costs of ``model``'s quantized layers (after surgery; calibration not needed).

        ``pins`` maps layer *names* (already resolved) to fixed bits; the other layers may take
        ``min_bits..max_bits``. ``input_shape`` ``(C, H, W)`` is needed for BOPs.
        """
        pins = dict(pins or {})
        rows = layer_stats(model)
        macs: dict[str, int] = {}
        if budget.kind == "bops":
            if input_shape is None:
                raise SrqError("a bops budget needs the input size of the model")
            macs = count_macs(model, input_shape)
        layers = tuple(
            LayerCost(r.name, r.params, macs.get(r.name, 0), r.act_bits,
                      (pins[r.name],) if r.name in pins else tuple(range(min_bits, max_bits + 1)))
            for r in rows)
        if budget.kind == "avg_weight_bits":
            const, scale = 0, float(sum(r.params for r in rows))
        elif budget.kind == "size_mb":
            const, scale = int(model_totals(model)["packed_bytes"]) - sum(r.packed_bytes for r in rows), 1e6
        else:
            quant = {n for n, m in model.named_modules() if is_quant_layer(m)}
            const = sum(v * FLOAT_BITS * FLOAT_BITS for n, v in macs.items() if n not in quant)
            scale = 1.0
        return cls(budget, layers, const, scale)

    # -- exact costs ---------------------------------------------------------------------
    def unit_cost(self, layer: LayerCost, bits: int) -> int:
        if self.budget.kind == "avg_weight_bits":
            return layer.params * bits
        if self.budget.kind == "size_mb":
            return math.ceil(layer.params * bits / 8)
        return layer.macs * bits * layer.act_bits

    def per_bit(self, layer: LayerCost) -> float:
        """Linear cost coefficient ``c_ℓ`` of one weight bit (the regulariser's weight)."""
        if self.budget.kind == "avg_weight_bits":
            return float(layer.params)
        if self.budget.kind == "size_mb":
            return layer.params / 8.0
        return float(layer.macs * layer.act_bits)

    @property
    def budget_units(self) -> float:
        return self.budget.value * self.scale

    def total(self, alloc: Mapping[str, int]) -> int:
        return self.const + sum(self.unit_cost(l, alloc[l.name]) for l in self.layers)

    def achieved(self, alloc: Mapping[str, int]) -> float:
        """The allocation's total in the budget's unit (what the report shows)."""
        return self.total(alloc) / self.scale

    def fits(self, alloc: Mapping[str, int]) -> bool:
        """``FILL·budget ≤ cost ≤ budget``."""
        t = self.total(alloc)
        return FILL * self.budget_units <= t <= self.budget_units

    def extreme(self, pick) -> dict[str, int]:
        return {l.name: pick(l.options) for l in self.layers}

    def check_feasible(self, min_bits: int, max_bits: int, pins: Mapping[str, int]) -> None:
        """SrqError when no allocation can meet the budget (or the budget leaves nothing to
        search because every layer at ``max_bits`` already fits far below it)."""
        if not self.layers:
            raise SrqError("the model has no quantized layer to search bits for")
        pin_text = (" and pins " + ",".join(f"{k}={v}" for k, v in pins.items())) if pins else ""
        low = self.achieved(self.extreme(min))
        if low > self.budget.value * (1 + 1e-12):
            raise SrqError(f"budget {self.budget.describe()} is impossible: the smallest allocation "
                           f"(every layer at --min-bits {min_bits}{pin_text}) costs "
                           f"{self.budget.describe(low)}")
        high = self.achieved(self.extreme(max))
        if high < FILL * self.budget.value:
            raise SrqError(f"budget {self.budget.describe()} leaves nothing to search: every layer at "
                           f"--max-bits {max_bits}{pin_text} costs only {self.budget.describe(high)}; "
                           "lower the budget or raise --max-bits")
