"""``srq report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from srqcli.cli.app import app, out_console, user_errors


@app.command("report")
@user_errors
def report_command(
    target: Annotated[str, typer.Argument(help="Run folder or srq quantized .safetensors file.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for report.json, report.md and bits.png (default: the run folder, or the model file's folder).")] = None,
    budget: Annotated[str | None, typer.Option(help="Budget the bits were allocated for, as srq search-bits --budget takes it: avg-bits=3.0, size=1.5MB or bops=1.2G (the report's names avg_weight_bits, size_mb work too; default: the one in an existing report.json).")] = None,
    chart: Annotated[bool, typer.Option("--chart/--no-chart", help="Also draw bits.png.")] = True,
) -> None:
    """Per-layer bit allocation of a quantized model: bits, sizes, MACs, BOPs; (re)writes its report files."""
    from srqcli.report import render_table
    from srqcli.report.writer import report_target
    from srqcli.search.budget import parse_budget  # the one budget grammar, search-bits' too

    spec = parse_budget(budget) if budget else None
    files = report_target(target, out, budget=(spec.kind, spec.value) if spec else None, chart=chart)
    out_console.print(render_table(files.report))
    written = ", ".join(p.name for p in (files.json, files.markdown, files.chart) if p is not None)
    out_console.print(f"wrote {written} in [bold]{files.json.parent}[/]")
