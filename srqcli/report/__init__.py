"""Per-layer statistics and the bit-allocation report.

Public API::

    write_report(model, out_dir, *, info=None, metrics=None, budget=None,
                 input_shape=None, source=None, chart=True) -> ReportFiles
    build_report(model, *, info=None, metrics=None, budget=None, input_shape=None,
                 source=None) -> BitReport
    read_report(path) -> BitReport              # validates; SrqError on anything wrong
    render_table(report) -> rich.table.Table
    render_markdown(report) -> str
    render_chart(report, path) -> Path          # in srqcli.report.chart (imports matplotlib)

``report.json`` follows the schema ``srq.bit-report`` version 1 (docs/report-schema.md).
"""

from srqcli.report.build import build_report
from srqcli.report.render import render_markdown, render_table
from srqcli.report.schema import (
                                  SCHEMA,
                                  SCHEMA_VERSION,
                                  BitReport,
                                  Budget,
                                  LayerEntry,
                                  read_report,
)
from srqcli.report.writer import (
                                  CHART_PNG,
                                  REPORT_JSON,
                                  REPORT_MD,
                                  ReportFiles,
                                  write_report,
                                  write_report_files,
)

__all__ = [
    "CHART_PNG", "REPORT_JSON", "REPORT_MD", "SCHEMA", "SCHEMA_VERSION", "BitReport", "Budget",
    "LayerEntry", "ReportFiles", "build_report", "read_report", "render_markdown",
    "render_table", "write_report", "write_report_files",
]
