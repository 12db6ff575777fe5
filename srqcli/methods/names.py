"""The names ``srq quantize --method`` accepts (import-light: the recipe validator reads it)."""

from __future__ import annotations

#: ``srq`` is the method itself (:mod:`srqcli.core.srq`); the rest are baselines, one module
#: each in :mod:`srqcli.methods`.
METHODS = ("srq", "rq", "lsq", "ste", "slb", "dq")
