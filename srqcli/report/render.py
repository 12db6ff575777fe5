"""Human-readable views of a bit report: a Markdown document and a Rich table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from srqcli.report.schema import BitReport, LayerEntry

if TYPE_CHECKING:
    from rich.table import Table

COLUMNS = ("layer", "type", "shape", "params", "MACs", "W bits", "A bits", "step(s)",
           "packed", "BOPs", "near grid")
_RIGHT = {"params", "MACs", "W bits", "A bits", "packed", "BOPs", "near grid"}
_BUDGET_LABEL = {"avg_weight_bits": "average weight bits", "size_mb": "packed size (MB)",
                 "bops": "BOPs"}


def si(n: float | None, unit: str = "") -> str:
    """``1234567`` → ``1.23 M``; ``None`` → ``—``."""
    if n is None:
        return "—"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {prefix}{unit}"
    return f"{n:.4g} {unit}".rstrip() if isinstance(n, float) else f"{n} {unit}".rstrip()


def size(n: float) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):,.2f} MiB"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def steps(r: LayerEntry) -> str:
    if not r.quantized or r.weight_step_min is None:
        return "float"
    if not r.per_channel:
        return f"{r.weight_step_min:.3g}"
    return f"{r.weight_step_min:.3g}–{r.weight_step_max:.3g} ({len(r.weight_steps)} ch)"


def layer_cells(r: LayerEntry) -> list[str]:
    """The cells of one layer row, in :data:`COLUMNS` order."""
    kind = r.type + (f" g={r.groups}" if r.groups > 1 else "")
    wb = str(r.weight_bits) if r.quantized else "32 (float)"
    ab = f"{r.act_bits}{'' if r.act_signed is None else ('s' if r.act_signed else 'u')}" \
        if r.quantized else "32"
    if r.output_bits is not None:
        ab += f", output {r.output_bits}"
    return [r.name, kind, "×".join(map(str, r.shape)), f"{r.params:,}", si(r.macs),
            wb, ab, steps(r), f"{r.packed_bytes:,} B", si(r.bops), pct(r.cluster_fraction)]


def total_cells(report: BitReport) -> list[str]:
    t = report.totals
    return ["total", f"{t.quantized_layers} quantized" + (f", {t.float_layers} float" if t.float_layers else ""),
            "", f"{sum(r.params for r in report.layers):,}", si(t.macs),
            f"{t.avg_weight_bits:.2f} avg", "", "",
            f"{sum(r.packed_bytes for r in report.layers):,} B", si(t.bops), pct(t.cluster_fraction)]


def summary_lines(report: BitReport) -> list[tuple[str, str]]:
    """(label, value) pairs of the totals, shared by Markdown and the terminal."""
    t, a = report.totals, report.accuracy
    lines = [
        ("model size", f"{size(t.float_bytes)} float → {size(t.packed_bytes)} packed"
                       + (f" ({t.compression:.2f}× smaller)" if t.compression else "")),
        ("average weight bits", (f"{t.avg_weight_bits:.2f} over {t.quantized_params:,} quantized "
                                 f"weights; {t.float_params:,} other parameters float")),
        ("BOPs", "unknown (no input size)" if t.bops is None else
         f"{si(t.bops)} (float: {si(t.float_bops)}"
         + (f", {t.bops_reduction:.1f}× fewer)" if t.bops_reduction else ")")),
        ("weights within α/4 of a grid point", pct(t.cluster_fraction)),
    ]
    if a.float_top1 is not None or a.quantized_top1 is not None:
        f = "—" if a.float_top1 is None else f"{a.float_top1:.2f}%"
        q = "—" if a.quantized_top1 is None else f"{a.quantized_top1:.2f}%"
        lines.append(("top-1", f"{q} quantized, {f} float"))
    if report.budget is not None:
        b = report.budget
        got = "unknown" if b.achieved is None else f"{b.achieved:.4g}"
        verdict = "" if b.met is None else (" — met" if b.met else " — NOT met")
        lines.append(("budget", f"{_BUDGET_LABEL[b.kind]} ≤ {b.value:.4g}: achieved {got}{verdict}"))
    return lines


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(report: BitReport) -> str:
    """``report.md``: a title, the per-layer table and the totals."""
    m = report.model
    what = m.arch or "model"
    lines = [f"# Bit allocation: {what}", ""]
    facts = []
    if m.input_shape:
        facts.append(f"input {'×'.join(map(str, m.input_shape[1:]))}")
    if m.num_classes:
        facts.append(f"{m.num_classes} classes")
    if report.source:
        facts.append(f"source `{report.source}`")
    facts.append(f"srq {report.srq_version}, report schema {report.schema_version}")
    lines += [", ".join(facts) + ".", ""]
    if m.preprocessing is not None:
        lines += [f"Input preprocessing: {m.preprocessing.describe()}.", ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "|".join("---:" if c in _RIGHT else "---" for c in COLUMNS) + "|")
    for r in report.layers:
        lines.append("| " + " | ".join(_md(c) for c in layer_cells(r)) + " |")
    lines.append("| " + " | ".join(f"**{c}**" if c else "" for c in total_cells(report)) + " |")
    lines += ["", "## Totals", ""]
    lines += [f"- **{label}**: {value}" for label, value in summary_lines(report)]
    lines += ["", ("Activation bits: `s` signed, `u` unsigned grid. *near grid*: fraction of the "
                   "latent weights inside the clip range that lie within α/4 of a grid point. "
                   "BOPs = MACs × weight bits × activation bits. Field definitions: "
                   "docs/report-schema.md."), ""]
    return "\n".join(lines)


TABLE_COLUMNS = ("layer", "type", "params", "MACs", "bits\nW/A", "step(s)", "packed", "BOPs",
                 "near\ngrid")


def _compact_cells(r: LayerEntry) -> list[str]:
    kind = r.type + (f" g{r.groups}" if r.groups > 1 else "")
    if r.quantized:
        bits = f"{r.weight_bits}/{r.act_bits}{'' if r.act_signed is None else ('s' if r.act_signed else 'u')}"
        if r.output_bits is not None:
            bits += f" →{r.output_bits}"
        step = f"{r.weight_step_min:.3g}" if not r.per_channel else \
            f"{r.weight_step_min:.2g} – {r.weight_step_max:.2g}"  # wraps at the spaces
    else:
        bits, step = "float", "—"
    return [r.name, kind, si(r.params), si(r.macs), bits, step, _bytes(r.packed_bytes),
            si(r.bops), pct(r.cluster_fraction)]


def _bytes(n: int) -> str:
    return f"{n} B" if n < 1024 else size(n)


def render_table(report: BitReport) -> Table:
    """The per-layer table for the terminal, totals in the last row and the caption.

    Narrower than ``report.md`` (SI units, no shape column) so it fits 80-column terminals.
    """
    from rich import box
    from rich.table import Table

    title = f"bit allocation: {report.model.arch or report.source or 'model'}"
    # Compact: columns separated by one space, no outer edge. When the terminal is too narrow
    # only the layer names fold and the per-channel step ranges wrap; numbers are never cut.
    table = Table(title=title, caption_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, padding=0)
    for c in TABLE_COLUMNS:
        right = c not in ("layer", "type", "step(s)")
        wraps = c in ("layer", "step(s)")
        table.add_column(c, justify="right" if right else "left", no_wrap=not wraps,
                         overflow="fold" if wraps else "ellipsis")
    for r in report.layers:
        table.add_row(*_compact_cells(r), style=None if r.quantized else "dim")
    t = report.totals
    table.add_section()
    table.add_row("total", f"{t.quantized_layers}q" + (f"+{t.float_layers}f" if t.float_layers else ""),
                  si(sum(r.params for r in report.layers)), si(t.macs), f"{t.avg_weight_bits:.2f}",
                  "", _bytes(sum(r.packed_bytes for r in report.layers)), si(t.bops),
                  pct(t.cluster_fraction), style="bold")
    table.caption = "\n".join(f"{label}: {value}" for label, value in summary_lines(report))
    return table
