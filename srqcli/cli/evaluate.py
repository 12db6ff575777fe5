"""``srq eval``."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from srqcli.cli.app import Device, app, job_console, out_console, user_errors
from srqcli.cli.preprocessing import (
    Channels,
    ImageSize,
    Interpolation,
    Mean,
    ResizeSize,
    Std,
    typed_preprocessing,
)
from srqcli.preprocessing import FLAGS, check_preprocessing


@app.command("eval")
@user_errors
def eval_command(
    target: Annotated[str, typer.Argument(help="Run folder, srq .safetensors or .onnx file, a float weights file (state_dict, TorchScript or torch.export .pt2: the architecture is read from it), or an architecture name or your model's code as package.module:Class (with --checkpoint).")],
    arch: Annotated[Optional[str], typer.Option(help="Architecture of a float weights file (default: found from its tensor names and shapes), or the package.module:Class of a run built from your code (srq imports code only when named).")] = None,
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="Dataset (default: the one the run used).")] = None,
    image_size: ImageSize = None,
    resize_size: ResizeSize = None,
    mean: Mean = None,
    std: Std = None,
    channels: Channels = None,
    interpolation: Interpolation = None,
    checkpoint: Annotated[Optional[str], typer.Option("--checkpoint", "-c", help="Float weights for an architecture name.")] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="Classes (default: from the data).")] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 256,
    workers: Annotated[int, typer.Option(help="Data loader workers.")] = 0,
    device: Annotated[Device, typer.Option(help="Device.")] = Device.auto,
    trust_pickle: Annotated[bool, typer.Option(help="Allow unpickling a checkpoint (runs code from the file!).")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on an unreadable image instead of skipping it (ImageFolder data).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Top-1, top-5, loss and images/s of a model on the held-out split."""
    from srqcli.workflow.evaluate import run_eval

    typed = typed_preprocessing(image_size, resize_size, mean, std, channels, interpolation)
    check_preprocessing(typed["mean"], typed["std"], channels, typed["interpolation"], FLAGS)
    res = run_eval(target, data=data, checkpoint=checkpoint, num_classes=num_classes,
                   batch_size=batch_size, workers=workers, device=device.value,
                   trust_pickle=trust_pickle, strict=strict, console=job_console(quiet),
                   show_progress=not quiet, arch=arch, preprocessing=typed)
    m = res.metrics
    if as_json:
        deployed = res.deployed.to_dict() if res.deployed else None
        out_console.print_json(json.dumps({"target": res.target, "kind": res.kind, "data": res.data,
                                           **m.to_dict(), "deployed": deployed}))
        return
    table = Table(title=f"srq eval: {res.target} ({res.kind})")
    for col in ("model", "top-1", "top-5", "loss", "images", "img/s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    rows = [(res.kind, m)] + ([("deployed", res.deployed)] if res.deployed else [])
    for label, r in rows:
        table.add_row(label, f"{r.top1:.2f}%", f"{r.top5:.2f}%", f"{r.loss:.4f}", str(r.images),
                      f"{r.images_per_s:,.0f}")
    out_console.print(table)
    if res.deployed:
        out_console.print("deployed: the ONNX file srq export writes, run with onnxruntime's integer arithmetic",
                          highlight=False, soft_wrap=True)
    elif res.undeployable:
        out_console.print(f"deployed: n/a, this model cannot be exported ({res.undeployable})",
                          highlight=False, soft_wrap=True)
    out_console.print(f"[dim]{res.data}[/]")
