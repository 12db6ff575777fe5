"""``srq search-bits``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from srqcli.cli.app import Device, app, job_console, out_console, user_errors
from srqcli.config import Recipe, apply_overrides, load_recipe, resolve_recipe_path
from srqcli.errors import SrqError


class Strategy(str, Enum):
    learned = "learned"
    sensitivity = "sensitivity"


class GateStructure(str, Enum):
    top = "top"
    lsb = "lsb"


@app.command("search-bits")
@user_errors
def search_bits(
    model: Annotated[str, typer.Argument(help="Architecture (resnet20, lenet5, …), your model's code as package.module:Class (imported), or 'example' for the built-in demo.")],
    budget: Annotated[str | None, typer.Option("--budget", help="avg-bits=3.0 | size=1.5MB | bops=1.2G.")] = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="ImageFolder (train/, val/), IDX folder, or 'example'.")] = None,
    checkpoint: Annotated[str | None, typer.Option("--checkpoint", "-c", help="Float weights: state_dict .pt/.pth, .safetensors or TorchScript.")] = None,
    recipe: Annotated[str | None, typer.Option("--recipe", "-r", help="Recipe TOML or built-in name; may hold a \\[search] table.")] = None,
    min_bits: Annotated[int | None, typer.Option(help="Fewest weight bits a layer may get (default 2).")] = None,
    max_bits: Annotated[int | None, typer.Option(help="Most weight bits a layer may get (default 4).")] = None,
    pin: Annotated[list[str] | None, typer.Option(help="Fixed weight bits, e.g. 'conv1=8,fc=8' (repeatable).")] = None,
    act_bits: Annotated[int | None, typer.Option(help="Activation bits (fixed; default from the recipe).")] = None,
    output_bits: Annotated[int | None, typer.Option(help="Bits of the layer outputs no quantizer reads (residual branches, a stem feeding a skip connection), as srq quantize --output-bits (default 8; 0: float); the fine-tune from the searched file must use the same value.")] = None,
    strategy: Annotated[Strategy | None, typer.Option(help="learned (gates, docs/method.md §6) or sensitivity (Fisher + knapsack).")] = None,
    gate_structure: Annotated[GateStructure | None, typer.Option(help="Gate levels: lsb (resolution, default) or top (range rings).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Search epochs (learned).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate of the weights.")] = None,
    quant_lr: Annotated[float | None, typer.Option(help="Learning rate of the quantizer steps.")] = None,
    gate_lr: Annotated[float | None, typer.Option(help="Learning rate of the gate logits.")] = None,
    lambda_lr: Annotated[float | None, typer.Option(help="Dual-ascent step of the budget multiplier.")] = None,
    per_channel: Annotated[bool | None, typer.Option("--per-channel/--per-tensor", help="Per-output-channel weight steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    workers: Annotated[int | None, typer.Option(help="Data loader workers.")] = None,
    calib_batches: Annotated[int | None, typer.Option(help="Batches used to initialise activation steps.")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Classes of the model (default: from the data).")] = None,
    pretrain_epochs: Annotated[int | None, typer.Option(help="Train the float model first for N epochs (when no checkpoint).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    device: Annotated[Device | None, typer.Option(help="Device.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default runs/ARCH-search-KIND).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the search in --out from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in --out.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on an unreadable image instead of skipping it (ImageFolder data).")] = False,
    trust_pickle: Annotated[bool, typer.Option(help="Allow unpickling a checkpoint (runs code from the file!).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Search each layer's weight bits under a budget; write an allocation for srq quantize --bit-config."""
    from srqcli.search.budget import parse_budget, parse_pins
    from srqcli.search.workflow import SearchConfig, load_search_recipe, run_search
    from srqcli.train.distributed import is_main

    if recipe:
        base, search = load_search_recipe(recipe)
    else:
        base, search = (load_recipe("example") if model == "example" else Recipe()), {}
    if model != "example":
        base.model.arch = model
        from srqcli.models.user import is_import_path

        if is_import_path(model):
            from srqcli.workflow.model_source import user_code

            job_console(quiet).print(user_code(model), highlight=False, soft_wrap=True)
    cfg = apply_overrides(base, {
        "model.checkpoint": checkpoint, "model.num_classes": num_classes,
        "model.pretrain_epochs": pretrain_epochs,
        "data.source": data, "data.batch_size": batch_size, "data.workers": workers,
        "data.calib_batches": calib_batches, "quant.per_channel": per_channel,
        "quant.output_bits": output_bits,
        "data.strict": strict or None,
        "train.epochs": epochs, "train.lr": lr, "train.quant_lr": quant_lr, "train.seed": seed,
        "train.device": device.value if device else None,
    }, origin=resolve_recipe_path(recipe) if recipe else None)
    if model == "example" and not recipe:
        cfg.dropbits.variant = "none"  # the search has its own gates on the DropBits levels
    for key, value in (("budget", budget), ("min_bits", min_bits), ("max_bits", max_bits),
                       ("act_bits", act_bits), ("strategy", strategy.value if strategy else None),
                       ("structure", gate_structure.value if gate_structure else None),
                       ("gate_lr", gate_lr), ("lambda_lr", lambda_lr)):
        if value is not None:
            search[key] = value
    if pin:
        search["pins"] = parse_pins(pin)
    if "budget" not in search and not resume:
        raise SrqError("--budget is required, e.g. --budget avg-bits=3.0, size=1.5MB or bops=1.2G")
    scfg = SearchConfig(**search)  # keys: the flags above, or a [search] table already checked
    if not resume:
        scfg.validate()
    if out is None:
        from srqcli.models.user import folder_name

        out = Path("runs") / f"{folder_name(cfg.model.arch)}-search-{parse_budget(scfg.budget).kind}"
    result = run_search(cfg, scfg, out, resume=resume, overwrite=overwrite,
                        trust_pickle=trust_pickle, console=job_console(quiet),
                        show_progress=not quiet)
    if is_main():  # under torchrun the other processes stay quiet
        _print_summary(result, cfg)


def _print_summary(result, cfg: Recipe) -> None:
    a = result.allocation
    table = Table(title=f"srq search-bits: {cfg.model.arch} ({a.kind} budget {a.budget:g}, "
                        f"achieved {a.achieved:.6g} = {a.fill:.2%}, {a.method})")
    table.add_column("layer")
    table.add_column("weight bits", justify="right")
    table.add_column("act bits", justify="right")
    for lb in result.plan:
        table.add_row(lb.name, str(lb.weight_bits), str(lb.act_bits))
    out_console.print(table)
    out_console.print(f"top-1 (val): float {result.float_metrics.top1:.2f}%, searched allocation "
                      f"{result.search_metrics.top1:.2f}% (before fixed-bit fine-tuning)")
    out_console.print(f"saved [bold]{result.out / 'bits.toml'}[/] and searched.safetensors; fine-tune the "
                      "searched network with these bits (add --epochs N to choose its length):", highlight=False)
    out_console.print(result.fine_tune, markup=False, highlight=False, soft_wrap=True)  # one line to copy
