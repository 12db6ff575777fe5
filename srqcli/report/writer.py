"""``write_report``: the bit-allocation report files of a model, written atomically.

Called at the end of ``srq quantize`` (into the run folder), by ``srq export`` and by
``srq report``. Each file is complete or absent: every one goes through
:mod:`srqcli.io.atomic`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from srqcli.io.atomic import write_text_atomic
from srqcli.report.build import BudgetLike, build_report
from srqcli.report.render import render_markdown
from srqcli.report.schema import BitReport, write_report_json

if TYPE_CHECKING:
    from srqcli.io.quantized import ModelInfo

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CHART_PNG = "bits.png"


@dataclass(frozen=True)
class ReportFiles:
    """The report that was written and where."""

    report: BitReport
    json: Path
    markdown: Path
    chart: Path | None


def write_report(model: nn.Module, out_dir: str | os.PathLike, *, info: ModelInfo | None = None,
                 metrics: Mapping[str, Any] | None = None, budget: BudgetLike | None = None,
                 input_shape: Sequence[int] | None = None, source: str | None = None,
                 chart: bool = True) -> ReportFiles:
    """Build the report of ``model`` and write ``report.json``, ``report.md``, ``bits.png``.

    ``out_dir`` is created if needed. See :func:`srqcli.report.build.build_report` for the
    keyword arguments; ``chart=False`` skips the PNG (and matplotlib).
    """
    report = build_report(model, info=info, metrics=metrics, budget=budget,
                          input_shape=input_shape, source=source)
    return write_report_files(report, out_dir, chart=chart)


def write_report_files(report: BitReport, out_dir: str | os.PathLike, *,
                       chart: bool = True) -> ReportFiles:
    """Write an already built report's files into ``out_dir``."""
    out = Path(out_dir)
    json_path = write_report_json(report, out / REPORT_JSON)
    md_path = out / REPORT_MD
    write_text_atomic(md_path, render_markdown(report))
    png = None
    if chart:
        from srqcli.report.chart import render_chart

        png = render_chart(report, out / CHART_PNG)
    return ReportFiles(report, json_path, md_path, png)


def report_target(target: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                  budget: BudgetLike | None = None, chart: bool = True) -> ReportFiles:
    """(Re)write the report of a run folder, an srq quantized model file or a packed export
    (what ``srq export`` reads too).

    The files go to ``out_dir`` (default: the run folder, or the model file's folder). With
    no ``budget``, one recorded in an existing ``report.json`` there is kept.
    """
    from srqcli.export.artifacts import load_quantized_source, resolve_source

    path = resolve_source(target)
    model, info = load_quantized_source(path)
    out = Path(out_dir) if out_dir is not None else path.parent
    return rewrite_report(model, out, info=info, budget=budget, source=str(path), chart=chart)


def rewrite_report(model: nn.Module, out_dir: str | os.PathLike, *, info: ModelInfo,
                   budget: BudgetLike | None = None, source: str | None = None,
                   chart: bool = True) -> ReportFiles:
    """:func:`write_report` into a folder that may hold a report already (a run folder).

    With no ``budget``, the one recorded in the existing ``report.json`` is kept: the report
    of ``srq search-bits`` shows its budget line, and a later ``srq report`` or ``srq export``
    of the same model must not drop it.
    """
    from srqcli.errors import SrqError
    from srqcli.report.schema import read_report

    out = Path(out_dir)
    if budget is None and (out / REPORT_JSON).is_file():
        try:
            budget = read_report(out / REPORT_JSON).budget
        except SrqError:
            budget = None  # it is about to be replaced anyway
    return write_report(model, out, info=info, budget=budget, source=source, chart=chart)
