"""``srq export``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.table import Table

from srqcli.cli.app import app, err_console, out_console, user_errors

if TYPE_CHECKING:
    from srqcli.export.workflow import ExportResult


@app.command("export")
@user_errors
def export_command(
    target: Annotated[str, typer.Argument(help="Run folder or quantized model .safetensors (srq quantize output, or a packed file).")],
    format: Annotated[str, typer.Option("--format", "-f", help="onnx (runs in onnxruntime) or safetensors (codes bit-packed at their true width).")] = "onnx",
    layout: Annotated[str, typer.Option(help="ONNX layout: qdq (int8 containers, integer kernels in onnxruntime) or packed (INT4/INT2 initializers, smallest file, float kernels).")] = "qdq",
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default 19 for qdq, 21 for packed; 25+ stores 2-bit weights as INT2).")] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Output file (default: next to the model: model.onnx, model.packed.onnx, model.packed.safetensors).")] = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="Verify on validation batches of this dataset (default: random inputs).")] = None,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Compare the artifact with the PyTorch model before writing it.")] = True,
    batches: Annotated[int, typer.Option(help="Batches used for verification.")] = 4,
    batch_size: Annotated[int, typer.Option(help="Verification batch size.")] = 32,
    requant: Annotated[bool, typer.Option("--requant", help="Also quantize to int8 the layer outputs PyTorch keeps in float (residual branches, average-pool inputs; steps calibrated on --data or random inputs) so every conv runs as an integer kernel: ~2x faster ResNets, but no longer bit-exact; verified by top-1 agreement with --data.")] = False,
    float_unfused: Annotated[bool, typer.Option("--float-unfused", help="Store the weights of convolutions whose output stays float (residual branches, stem; onnxruntime cannot fuse them) as float32 instead of int8 codes: the same values, still exact, but onnxruntime no longer dequantizes them on every run (faster exact export, larger file).")] = False,
    arch: Annotated[str | None, typer.Option(help="The package.module:Class of a run built from your code (srq imports code only when named).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Export a quantized model to ONNX or packed safetensors, verified against PyTorch."""
    from srqcli.export.workflow import run_export

    if arch is not None:
        from srqcli.errors import SrqError
        from srqcli.models.user import is_import_path
        from srqcli.workflow.model_source import user_code

        if not is_import_path(arch):
            raise SrqError(f"--arch {arch}: srq export takes --arch only for a run built from your "
                           "code (package.module:Class); a run names its architecture itself")
        err_console.print(user_code(arch), highlight=False)

    res = run_export(target, fmt=format.strip().lower(), layout=layout.strip().lower(), opset=opset, out=out, data=data,
                     verify=verify, batches=batches, batch_size=batch_size, requant=requant,
                     float_unfused=float_unfused, console=err_console)
    if as_json:
        out_console.print_json(json.dumps(res.to_dict()))
        return
    _print_verification(res)
    what = f"ONNX ({res.layout}, opset {res.opset})" if res.format == "onnx" else "packed safetensors"
    out_console.print(f"wrote {res.path} ({what}, {res.bytes / 1024:,.1f} KiB)", highlight=False)
    if res.report is not None:
        written = ", ".join(p.name for p in (res.report.json, res.report.markdown, res.report.chart) if p)
        out_console.print(f"bit-allocation report: {written} in {res.report.json.parent} "
                          f"(srq report {res.path} prints it)", highlight=False)


# What each row of the ONNX check runs and compares with, in words (srqcli.export.verify).
_RUNS = {"disabled": "unoptimised", "default": "fused"}
_AGAINST = {"pytorch": "PyTorch", "deploy": "deploy*"}


def _print_verification(res: ExportResult) -> None:
    """The check that ran before the artifact was written: PASS (a failure never gets here:
    it is an error and nothing is written) or that nothing was checked."""
    v = res.verify
    if res.details.get("requantized"):
        out_console.print(f"requantized {len(res.details['requantized'])} float layer outputs to int8 "
                          "(--requant: faster, not bit-exact)", highlight=False)
    if v is None:
        out_console.print("[yellow]not verified[/] (--no-verify)")
    elif res.format == "safetensors":
        out_console.print(f"[green]PASS[/]: the reloaded packed file reproduces the outputs exactly on "
                          f"{v['images']} images (tolerance: bit-identical)", highlight=False)
    else:
        _print_onnx_check(v)


def _print_onnx_check(v: dict) -> None:
    """The ONNX check's table, each row and its tolerance explained (a failed check is an error)."""
    table = Table(title=f"onnxruntime vs PyTorch, in steps of {v['output_step']:.3g} (the logits' resolution)",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=0)
    for col in ("onnxruntime", "vs", "max diff", "same", "≤1 step", "top-1", "result"):
        table.add_column(col, justify="left" if col in ("onnxruntime", "vs") else "right", no_wrap=True)
    for r in v["results"]:
        exact = r.get("require_identical", False)
        gated = r["min_within"] is not None or r["min_top1"] is not None or exact
        table.add_row(_RUNS[r["level"]], _AGAINST[r["against"]], f"{r['max_steps']:.2g}",
                      f"{100 * r.get('identical', 0.0):.1f}%" + (" (all)" if exact else ""),
                      _gated(r["within_one_step"], r["min_within"]), _gated(r["top1_agreement"], r["min_top1"]),
                      ("[green]PASS[/]" if r["ok"] else "[red]FAIL[/]") if gated else "reported")
    out_console.print(table)
    out_console.print("(≥N%): the tolerance. unoptimised: every op run as written; fused: onnxruntime's default "
                      "level (integer kernels). *deploy model: this file run in PyTorch with onnxruntime's "
                      "integer arithmetic (srq eval reports its accuracy).", highlight=False)
    if v.get("inexact_ops"):
        hint = "; quantize with --output-bits 8 for all-integer convolutions" if "Conv" in v["inexact_ops"] else ""
        out_console.print(f"not bit-exact by design: {', '.join(v['inexact_ops'])} run in float (the last bit "
                          f"may differ between runtimes){hint}", highlight=False)
    ops = v.get("executed_op_types") or {}
    integer = {k: n for k, n in ops.items() if k.startswith(("QLinear", "QGemm", "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat"))}
    if integer:
        out_console.print("integer kernels: " + ", ".join(f"{k}×{n}" for k, n in integer.items()), highlight=False)
    elif ops:
        out_console.print("integer kernels: none (onnxruntime runs this layout with float kernels)")
    if integer and v.get("float_layers"):
        out_console.print("float kernels: " + ", ".join(v["float_layers"]), highlight=False)
    out_console.print("[green]PASS[/]: every gated row is within its tolerance", highlight=False)


def _gated(fraction: float, minimum: float | None) -> str:
    """A percentage with its tolerance beside it, when it has one."""
    return f"{100 * fraction:.1f}%" + (f" (≥{100 * minimum:g}%)" if minimum is not None else "")
