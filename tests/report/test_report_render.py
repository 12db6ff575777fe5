"""report.md, the Rich table and bits.png."""

from __future__ import annotations

import io

import pytest
from report_testutil import INPUT, quantized_known
from rich.console import Console

from srqcli.config import QuantConfig
from srqcli.report import build_report, render_markdown, render_table
from srqcli.report.chart import render_chart

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report():
    model, _ = quantized_known(QuantConfig(weight_bits=3, act_bits=4, per_channel=True, skip=["fc2"]))
    return build_report(model, input_shape=INPUT, metrics={"float_top1": 91.5, "top1": 90.25},
                        budget=("avg_weight_bits", 3.5))


def test_markdown_has_every_layer_and_the_totals(report):
    md = render_markdown(report)
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(report.layers) + 1  # header, layers, total
    for layer, row in zip(report.layers, rows[1:]):
        assert row.startswith(f"| {layer.name} | ")
        assert f"{layer.params:,}" in row and f"{layer.packed_bytes:,} B" in row
    assert "32 (float)" in rows[-2]  # fc2 was skipped
    assert "90.25% quantized, 91.50% float" in md
    assert "average weight bits ≤ 3.5" in md and "met" in md
    assert f"{report.totals.avg_weight_bits:.2f} avg" in md


def test_markdown_escapes_pipes(report):
    report.layers[0].name = "odd|name"
    try:
        assert "odd\\|name" in render_markdown(report)
    finally:
        report.layers[0].name = "a"


@pytest.mark.parametrize("width", [80, 160])
def test_rich_table_lists_layers_and_totals(report, width):
    table = render_table(report)
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(table)
    text = buf.getvalue()
    assert table.row_count == len(report.layers) + 1
    for layer in report.layers:
        assert layer.name in text
    assert "near" in text and "total" in text and "smaller" in text
    assert max(len(line) for line in text.splitlines()) <= width


def test_chart_is_png(report, tmp_path):
    path = render_chart(report, tmp_path / "bits.png")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["bits.png"]


def test_chart_without_macs_or_float_layers(tmp_path):
    model, _ = quantized_known()
    path = render_chart(build_report(model), tmp_path / "x.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_import_srqcli_does_not_load_matplotlib():
    import subprocess
    import sys

    code = ("import sys, srqcli, srqcli.report, srqcli.cli; "
            "print('matplotlib' in sys.modules)")
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=root)
    assert out.stdout.strip() == "False"
