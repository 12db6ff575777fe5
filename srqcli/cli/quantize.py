"""``srq quantize``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from srqcli.cli.app import (
    Device,
    DropBitsVariant,
    app,
    job_console,
    out_console,
    print_deployed_note,
    user_errors,
)
from srqcli.cli.preprocessing import (
    Channels,
    ImageSize,
    Interpolation,
    Mean,
    ResizeSize,
    Std,
    typed_preprocessing,
)
from srqcli.config import Recipe, apply_overrides, load_recipe, resolve_recipe_path
from srqcli.errors import SrqError
from srqcli.methods.names import METHODS
from srqcli.preprocessing import FLAGS

Method = Enum("Method", {m: m for m in METHODS}, type=str)

@app.command()
@user_errors
def quantize(
    model: Annotated[str, typer.Argument(help="A weights file (state_dict .pt/.pth/.safetensors, TorchScript or torch.export .pt2: the architecture is read from it), an architecture name (resnet20, lenet5, resnet18, mobilenet_v2, … with -c), your model's code as package.module:Class (imported; -c for its weights), or 'example' for the built-in demo.")],
    arch: Annotated[Optional[str], typer.Option(help="Architecture of a MODEL weights file (default: found from its tensor names and shapes).")] = None,
    weights: Annotated[Optional[str], typer.Option(help="torchvision pretrained weights of the MODEL architecture (e.g. IMAGENET1K_V1, DEFAULT), from torch's hub cache.")] = None,
    checkpoint: Annotated[Optional[str], typer.Option("--checkpoint", "-c", help="Float weights: state_dict .pt/.pth, .safetensors or TorchScript.")] = None,
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="ImageFolder (train/, val/), IDX folder, or 'example'.")] = None,
    image_size: ImageSize = None,
    resize_size: ResizeSize = None,
    mean: Mean = None,
    std: Std = None,
    channels: Channels = None,
    interpolation: Interpolation = None,
    recipe: Annotated[Optional[str], typer.Option("--recipe", "-r", help="Recipe TOML file or built-in name (srq recipes).")] = None,
    bits: Annotated[Optional[int], typer.Option("--bits", "-b", help="Weight and activation bits (2–8).")] = None,
    weight_bits: Annotated[Optional[int], typer.Option(help="Weight bits (overrides --bits).")] = None,
    act_bits: Annotated[Optional[int], typer.Option(help="Activation bits (overrides --bits).")] = None,
    first_last_bits: Annotated[Optional[int], typer.Option(help="Bits of the first and last layer (e.g. 8, the LSQ protocol).")] = None,
    output_bits: Annotated[Optional[int], typer.Option(help="Bits of the layer outputs no quantizer reads (residual branches, a stem feeding a skip connection), quantized in training too, so `srq export` runs every conv as an integer kernel: fast and bit-exact (default 8; 0 leaves them float, as published protocols do).")] = None,
    snap_biases: Annotated[Optional[bool], typer.Option("--snap-biases/--no-snap-biases", help="After training, move the BatchNorm-folded biases (by at most half a step of onnxruntime's int32 accumulator grid) onto that grid, so the trained model computes what the exported file computes (default on).")] = None,
    skip: Annotated[Optional[list[str]], typer.Option(help="Leave layers matching this pattern float (repeatable).")] = None,
    bit_config: Annotated[Optional[Path], typer.Option(help="Per-layer bits TOML (\\[layers] \"name\" = {weight_bits=…}).")] = None,
    per_channel: Annotated[Optional[bool], typer.Option("--per-channel/--per-tensor", help="Per-output-channel weight steps.")] = None,
    method: Annotated[Optional[Method], typer.Option(help="Quantizer: srq, or a baseline (rq, lsq, ste, slb, dq; DropBits is off for them).")] = None,
    dropbits: Annotated[Optional[DropBitsVariant], typer.Option(help="DropBits variant.")] = None,
    no_dropbits: Annotated[bool, typer.Option("--no-dropbits", help="Turn DropBits off (same as --dropbits none).")] = False,
    drop_rate: Annotated[Optional[float], typer.Option("--drop-rate", "--dropbits-rate", help="DropBits rate p.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Fine-tuning epochs.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate of the weights.")] = None,
    quant_lr: Annotated[Optional[float], typer.Option(help="Learning rate of the quantizer steps.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Data loader workers.")] = None,
    calib_batches: Annotated[Optional[int], typer.Option(help="Batches used to initialise activation steps.")] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="Classes of the model (default: from the data).")] = None,
    pretrain_epochs: Annotated[Optional[int], typer.Option(help="Train the float model first for N epochs (when no checkpoint).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    device: Annotated[Optional[Device], typer.Option(help="Device.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default runs/ARCH-wWaA).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint (mid-epoch too).")] = False,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="Write the resume checkpoint every N steps too (default: every 10 minutes and each epoch end).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in --out.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on an unreadable image instead of skipping it (ImageFolder data).")] = False,
    trust_pickle: Annotated[bool, typer.Option(help="Allow unpickling a checkpoint (runs code from the file!).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Quantize a pretrained model with SRQ + DropBits (or a baseline --method), fine-tune,
    evaluate and save it."""
    from srqcli.search.allocation import read_allocation
    from srqcli.train.distributed import is_main
    from srqcli.workflow.model_source import resolve_model
    from srqcli.workflow.quantize import check_resume, run_quantize

    base = load_recipe(recipe) if recipe else (load_recipe("example") if model == "example" else Recipe())
    source, checkpoint_flag = None, "--checkpoint"  # where the weights came from, for messages
    if weights is not None:
        from srqcli.models.weights import cached_weights_file

        if checkpoint is not None or model == "example":
            raise SrqError("--weights takes the weights of a torchvision architecture name; "
                           "pass either --weights or -c, with an architecture name as MODEL")
        checkpoint, checkpoint_flag = str(cached_weights_file(model, weights)), "--weights"
    if model != "example":
        source = resolve_model(model, checkpoint=checkpoint, arch=arch, trust_pickle=trust_pickle)
        base.model.arch, checkpoint = source.arch, source.checkpoint
        checkpoint_flag = "the MODEL argument" if checkpoint == model else checkpoint_flag
        base.model.in_channels = source.in_channels or base.model.in_channels
        num_classes = num_classes or source.num_classes
    elif arch is not None:
        raise SrqError("--arch names the architecture of a MODEL weights file; the example has its own")
    layers = read_allocation(bit_config) if bit_config else None
    if no_dropbits and dropbits not in (None, DropBitsVariant.none):
        raise SrqError(f"--no-dropbits contradicts --dropbits {dropbits.value}")
    variant = "none" if no_dropbits or (method not in (None, Method.srq) and dropbits is None) \
        else (dropbits.value if dropbits else None)
    # (recipe key, the flag that set it, value): errors and --resume name the flag the user typed
    settings = [
        ("model.checkpoint", checkpoint_flag, checkpoint), ("model.num_classes", "--num-classes", num_classes),
        ("model.pretrain_epochs", "--pretrain-epochs", pretrain_epochs),
        ("data.source", "--data", data), ("data.batch_size", "--batch-size", batch_size),
        ("data.workers", "--workers", workers), ("data.calib_batches", "--calib-batches", calib_batches),
        ("data.strict", "--strict", strict or None),
        *((f"data.{key}", FLAGS[key], value) for key, value in typed_preprocessing(
            image_size, resize_size, mean, std, channels, interpolation).items()),
        ("quant.weight_bits", "--weight-bits" if weight_bits is not None else "--bits",
         weight_bits if weight_bits is not None else bits),
        ("quant.act_bits", "--act-bits" if act_bits is not None else "--bits",
         act_bits if act_bits is not None else bits),
        ("quant.first_last_bits", "--first-last-bits", first_last_bits),
        ("quant.output_bits", "--output-bits", output_bits), ("quant.skip", "--skip", skip or None),
        ("quant.snap_biases", "--snap-biases" if snap_biases else "--no-snap-biases", snap_biases),
        ("quant.per_channel", "--per-channel" if per_channel else "--per-tensor", per_channel),
        ("quant.layers", "--bit-config", layers),
        ("quant.method", "--method", method.value if method else None),
        ("dropbits.variant", "--no-dropbits" if no_dropbits else ("--dropbits" if dropbits else "--method"), variant),
        ("dropbits.rate", "--drop-rate", drop_rate),
        ("train.epochs", "--epochs", epochs), ("train.lr", "--lr", lr), ("train.quant_lr", "--quant-lr", quant_lr),
        ("train.seed", "--seed", seed), ("train.device", "--device", device.value if device else None),
        ("train.checkpoint_every", "--checkpoint-every", checkpoint_every),
    ]
    flags = {key: flag for key, flag, value in settings if value is not None}
    if model != "example":
        flags["model.arch"] = "the MODEL argument"
    cfg = apply_flags(base, {key: value for key, _, value in settings}, flags,
                      origin=resolve_recipe_path(recipe) if recipe else None)
    apply_model_preprocessing(cfg, weights)
    if out is None:
        from srqcli.models.user import folder_name

        out = Path("runs") / f"{folder_name(cfg.model.arch)}-w{cfg.quant.weight_bits}a{cfg.quant.act_bits}"
    if resume:
        finished = check_resume(out, cfg, flags)
        if finished:
            if is_main():
                out_console.print(finished, highlight=False, soft_wrap=True)
            return
    console = job_console(quiet)
    if source is not None and source.note:
        console.print(source.note, highlight=False, soft_wrap=True)
    result = run_quantize(cfg, out, resume=resume, overwrite=overwrite, trust_pickle=trust_pickle,
                          console=console, show_progress=not quiet)
    if is_main():  # under torchrun the other processes stay quiet
        print_quantize_summary(result, cfg)


def apply_model_preprocessing(recipe: Recipe, weights: str | None) -> None:
    """Fill the preprocessing the recipe and flags leave unset with the start model's own, for
    ImageFolder data (other data has its own): the one torchvision publishes with ``--weights``,
    or the one saved in an srq model file given as the checkpoint. A model's accuracy holds only
    with it. An image size given alone keeps the model's resize/crop ratio; its mean and std
    apply only to its own channel count.
    """
    from srqcli.data import is_imagefolder_source

    d = recipe.data
    preset = model_preprocessing(recipe, weights) if is_imagefolder_source(d.source) else None
    if not preset:
        return
    if d.image_size is not None and {"image_size", "resize_size"} <= set(preset):
        preset["resize_size"] = round(d.image_size * preset["resize_size"] / preset["image_size"])
    channels = preset.get("channels", 3)
    for key, value in preset.items():
        if key in ("mean", "std") and d.channels not in (None, channels):
            continue
        if key == "channels" and any(v is not None and len(v) != value for v in (d.mean, d.std)):
            continue
        if getattr(d, key) is None:
            setattr(d, key, value)


def model_preprocessing(recipe: Recipe, weights: str | None) -> dict[str, Any] | None:
    """The start model's own preprocessing as ``[data]`` settings, when it has one."""
    if weights is not None:
        from srqcli.models.weights import weights_preprocessing

        return weights_preprocessing(recipe.model.arch, weights)
    from srqcli.io.quantized import FLOAT, QUANTIZED, read_model_info, srq_format

    path = recipe.model.checkpoint
    if path is None or srq_format(path) not in (QUANTIZED, FLOAT):
        return None
    saved = read_model_info(path).preprocessing
    return saved.to_dict() if saved is not None else None


def apply_flags(base: Recipe, overrides: dict[str, Any], flags: dict[str, str],
                origin: Path | None = None) -> Recipe:
    """:func:`apply_overrides`, with an error about a value the user typed starting with the
    flag they typed (``--bits: quant.weight_bits must be between 2 and 8``): the recipe key
    alone does not say which of ``--bits``, ``--weight-bits`` or the recipe set it."""
    try:
        return apply_overrides(base, overrides, origin=origin)
    except SrqError as exc:
        key = str(exc).split(" ", 1)[0]
        if key in flags:
            raise SrqError(f"{flags[key]}: {exc}") from None
        raise


def print_quantize_summary(result: Any, cfg: Recipe) -> None:
    s = result.sizes
    table = Table(title=f"srq quantize: {cfg.model.arch} on {cfg.data.source}", show_header=True)
    table.add_column("")
    table.add_column("float", justify="right")
    table.add_column(cfg.quant.method, justify="right")  # the method that ran: srq, lsq, …
    table.add_column("deployed", justify="right")  # the file srq export writes (srqcli.deploy)
    f, q, d = result.float_metrics, result.quant_metrics, result.deployed_metrics
    na = "n/a"
    table.add_row("top-1 (val)", f"{f.top1:.2f}%", f"{q.top1:.2f}%", f"{d.top1:.2f}%" if d else na)
    table.add_row("top-5 (val)", f"{f.top5:.2f}%", f"{q.top5:.2f}%", f"{d.top5:.2f}%" if d else na)
    table.add_row("loss (val)", f"{f.loss:.4f}", f"{q.loss:.4f}", f"{d.loss:.4f}" if d else na)
    table.add_row("weight bits (avg)", "32", f"{s['avg_weight_bits']:.2f}", "")
    acts = sorted({p.act_bits for p in result.plan})
    table.add_row("activation bits", "32", "/".join(map(str, acts)), "")
    table.add_row("size", _kib(s["float_bytes"]), f"{_kib(s['packed_bytes'])} ({s['compression']:.1f}× smaller)", "")
    out_console.print(table)
    print_deployed_note(d is not None, result.undeployable)
    # soft_wrap: one line in a log file too (Rich would break it at 80 columns there).
    out_console.print(f"saved [bold]{result.out / 'model.safetensors'}[/] (+ metrics.json, recipe.toml, report.md, bits.png)",
                      soft_wrap=True)


def _kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):,.2f} MiB"
