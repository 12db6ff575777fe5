"""``bits.png``: per-layer weight bits (bars) above per-layer parameter counts.

matplotlib is imported only here, inside the function, and driven through its Agg canvas
directly (no ``pyplot``, no global backend switch), so ``import srqcli`` stays fast and a
user's interactive matplotlib session is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from srqcli.io.atomic import atomic_file
from srqcli.report.schema import BitReport

_QUANT, _FLOAT, _ACT, _AVG, _BUDGET = "#4C72B0", "#BBBBBB", "#222222", "#DD8452", "#C44E52"


def render_chart(report: BitReport, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Draw the chart of ``report`` and write it atomically as a PNG to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers = report.layers
    n = max(len(layers), 1)
    x = list(range(len(layers)))
    quant_bits = [r.weight_bits for r in layers if r.quantized] or [8]
    top = max(8, max(quant_bits)) + 1  # float layers (32 bits) are drawn clipped at the top

    fig = Figure(figsize=(min(max(6.0, 0.38 * n + 2), 40.0), 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_bits, ax_params = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))

    heights = [r.weight_bits if r.quantized else top for r in layers]
    colors = [_QUANT if r.quantized else _FLOAT for r in layers]
    bars = ax_bits.bar(x, heights, color=colors, width=0.75, label="weight bits")
    for bar, r in zip(bars, layers):  # labels inside the bars, clear of the activation ticks
        ax_bits.annotate(str(r.weight_bits) if r.quantized else "fp32",
                         (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                         ha="center", va="top", fontsize=7, xytext=(0, -3),
                         textcoords="offset points", color="white" if r.quantized else "black")
    qx = [i for i, r in enumerate(layers) if r.quantized]
    if qx:
        ax_bits.scatter(qx, [layers[i].act_bits for i in qx], marker="_", s=140, color=_ACT,
                        zorder=3, label="activation bits")
    t = report.totals
    ax_bits.axhline(t.avg_weight_bits, color=_AVG, linestyle="--", linewidth=1.2,
                    label=f"average weight bits {t.avg_weight_bits:.2f}")
    b = report.budget
    if b is not None and b.kind == "avg_weight_bits":
        ax_bits.axhline(b.value, color=_BUDGET, linewidth=1.4, label=f"budget {b.value:.2f}")
    ax_bits.set_ylim(0, top + 0.5)
    ax_bits.set_yticks(range(0, top + 1, 2 if top > 10 else 1))
    ax_bits.set_ylabel("bits")
    title = f"bit allocation: {report.model.arch or 'model'}"
    if t.compression:
        title += f" ({t.compression:.1f}× smaller)"
    fig.suptitle(title)
    ax_bits.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=8, ncols=4,
                   frameon=False)
    ax_bits.grid(axis="y", alpha=0.3)

    params = [r.params for r in layers]
    ax_params.bar(x, params, color=colors, width=0.75)
    if params and max(params) > 100 * max(min(params), 1):
        ax_params.set_yscale("log")
    ax_params.set_ylabel("parameters")
    ax_params.grid(axis="y", alpha=0.3)
    ax_params.set_xticks(x, [r.name for r in layers], rotation=60, ha="right", fontsize=8)
    ax_params.set_xlim(-0.6, n - 0.4)

    with atomic_file(path) as handle:
        fig.savefig(handle, format="png", dpi=dpi)
    return Path(path)
