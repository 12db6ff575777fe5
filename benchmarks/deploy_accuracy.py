"""Deployed accuracy on real data: Fashion-MNIST ResNet-20, trained model vs deploy model vs onnxruntime.

Issue #13's acceptance test. For each bit-width, with ``srq quantize``'s defaults (SRQ, DropBits
``lsb`` p = 0.05, ``--output-bits 8``: every conv of the exported file an integer kernel):

1. fine-tunes from the float ResNet-20 that ``benchmarks.fmnist_accuracy`` trains and caches
   (its recipe and fixed training subset), caching the ``srq quantize`` run;
2. exports the run as ``srq export`` does (qdq ONNX, verified on t10k batches; a file the
   verification refuses is recorded as refused and measured from the same export written
   with ``--no-verify``);
3. runs all 10,000 t10k images through the trained (fake-quant) PyTorch model, the deploy model
   (:func:`srqcli.deploy.build.build_deploy_model`, what ``srq quantize`` reports as
   "deployed") and the exported file in onnxruntime (default optimisation level), and reports
   the three top-1s, onnxruntime's top-1 agreement with the deploy model and the fraction of
   images whose logits are bit-identical, and the trained model's agreement with the deploy model.

Results: ``benchmarks/results/deploy_accuracy.json`` (rows already there with the same settings
are kept, so an interrupted run continues).

    python -m benchmarks.deploy_accuracy --pretrain-epochs 2 --epochs 3 --train-limit 10000
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from rich.console import Console

from benchmarks.common import RESULTS, write_result
from benchmarks.fmnist_accuracy import DATA, float_checkpoint, srq_recipe, srq_run_dir
from srqcli.data import DataSpec, load_datasets, make_loaders
from srqcli.deploy.build import build_deploy_model
from srqcli.errors import SrqError
from srqcli.export.bench import integer_ops
from srqcli.export.verify import ort_session
from srqcli.export.workflow import eager_quantizers, input_shape, run_export
from srqcli.io.quantized import load_model
from srqcli.workflow.quantize import run_quantize

NAME = "deploy_accuracy"


@torch.no_grad()
def logits(model, loader) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Logits and labels of every image of ``loader``, and the seconds it took."""
    start = time.perf_counter()
    outs, labels = [], []
    for x, y in loader:
        outs.append(model(x).float())
        labels.append(y)
    return torch.cat(outs), torch.cat(labels), time.perf_counter() - start


class OrtModel:
    """The exported file in onnxruntime at its default level (2 threads, no spinning)."""

    def __init__(self, path) -> None:
        self.session = ort_session(path, "default", threads=2)
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input: x.contiguous().numpy()})[0])


def top1(out: torch.Tensor, labels: torch.Tensor) -> float:
    return float((out.argmax(1) == labels).double().mean() * 100)


def agreement(a: torch.Tensor, b: torch.Tensor) -> dict:
    same = a.argmax(1) == b.argmax(1)
    return {"top1_agreement": float(same.double().mean() * 100), "differing_images": int((~same).sum())}


def trained_run(args, ckpt, bits: int, console: Console):
    """The cached ``srq quantize`` run of W``bits``A``bits`` (trained now if absent)."""
    out = srq_run_dir(args, bits, args.variant, args.seed)
    out = out.with_name(f"{out.name}_snap") if args.snap_biases else out
    if not (out / "model.safetensors").is_file() or not (out / "metrics.json").is_file():
        recipe = srq_recipe(args, ckpt, bits, args.variant, args.seed)
        recipe.quant.snap_biases = args.snap_biases
        run_quantize(recipe, out, overwrite=True, console=console)
    return out


def measure(args, ckpt, bits: int, console: Console) -> dict:
    load_before = os.getloadavg()
    started = time.perf_counter()
    run = trained_run(args, ckpt, bits, console)
    metrics = json.loads((run / "metrics.json").read_text())
    model, info = load_model(run / "model.safetensors")
    model.eval()
    spec = DataSpec(source=args.data, batch_size=250, **info.data_settings())  # the model's preprocessing
    _, val = make_loaders(load_datasets(spec), 250, 0, seed=0)

    onnx_path = run / "model.onnx"
    row: dict = {"run": run.name}
    try:
        exported = run_export(str(run), data=args.data, out=onnx_path, fmt="onnx")
    except SrqError as exc:  # verification refused the file: record why, measure it all the same
        row["export_refused"] = str(exc)
        exported = run_export(str(run), data=args.data, verify=False, out=onnx_path, fmt="onnx")
    row["export_verify"] = exported.verify
    row["integer_ops"] = integer_ops(onnx_path)

    with eager_quantizers():
        fake, labels, row["seconds_fake_quant"] = logits(model, val)
    deploy = build_deploy_model(model, input_shape(info))
    row["deploy_fused_layers"] = len(deploy.plan.fused)
    row["deploy_float_layers"] = list(deploy.plan.float_layers)
    row["deploy_inexact_ops"] = sorted(set(deploy.plan.inexact.values()))
    dep, _, row["seconds_deploy"] = logits(deploy, val)
    ort, _, row["seconds_ort"] = logits(OrtModel(onnx_path), val)

    row["images"] = len(labels)
    row["fake_quant_top1"] = top1(fake, labels)
    row["deploy_top1"] = top1(dep, labels)
    row["ort_top1"] = top1(ort, labels)
    row["deploy_minus_fake_quant"] = round(row["deploy_top1"] - row["fake_quant_top1"], 2)
    row["ort_vs_deploy"] = {**agreement(ort, dep),
                            "identical_logit_images": float((ort == dep).all(1).double().mean() * 100),
                            "identical_logit_values": float((ort == dep).double().mean() * 100),
                            "max_abs_logit_difference": float((ort - dep).abs().max())}
    row["fake_quant_vs_deploy"] = {**agreement(fake, dep),
                                   "max_abs_logit_difference": float((fake - dep).abs().max())}
    row["fake_quant_vs_ort"] = agreement(fake, ort)
    # what srq quantize itself reported for the same run (its own val loader): a cross-check
    row["srq_quantize_reported"] = {"top1": metrics["quantized"]["top1"],
                                    "before_bias_snap": metrics.get("before_bias_snap"),
                                    "deployed_top1": (metrics.get("deployed") or {}).get("top1"),
                                    "float_start_top1": metrics["float"]["top1"],
                                    "epoch_seconds": [h["seconds"] for h in metrics["history"]],
                                    "seconds": metrics["seconds"]}
    row["seconds"] = time.perf_counter() - started
    row["load_average"] = {"before": list(load_before), "after": list(os.getloadavg())}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DATA)
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--pretrain-lr", type=float, default=2e-3)
    p.add_argument("--pretrain-limit", type=int, default=None,
                   help="train the float start on a fixed subset (default: all 60k images)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--quant-lr", type=float, default=1e-3)
    p.add_argument("--train-limit", type=int, default=10000, help="fine-tune on a fixed subset")
    p.add_argument("--bits", type=int, nargs="+", default=[4, 3])
    p.add_argument("--output-bits", type=int, default=8, help="srq quantize --output-bits (its default)")
    p.add_argument("--no-snap-biases", dest="snap_biases", action="store_false",
                   help="srq quantize --no-snap-biases (default: snap, as srq quantize does)")
    p.add_argument("--variant", default="lsb", help="DropBits variant (srq quantize's default)")
    p.add_argument("--drop-rate", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    console = Console(stderr=True)
    settings = {k: v for k, v in vars(args).items() if k != "bits"}
    path = RESULTS / f"{NAME}.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    runs = done.get("runs", {}) if done.get("settings") == settings else {}
    ckpt = float_checkpoint(args, console)
    for bits in args.bits:
        key = f"w{bits}a{bits}"
        if key in runs:
            continue
        runs[key] = measure(args, ckpt, bits, console)
        r = runs[key]
        console.print(f"[bold]{key}[/]: fake-quant {r['fake_quant_top1']:.2f}, deploy {r['deploy_top1']:.2f}, "
                      f"onnxruntime {r['ort_top1']:.2f}; ORT vs deploy {r['ort_vs_deploy']['top1_agreement']:.2f}% "
                      f"(identical logits {r['ort_vs_deploy']['identical_logit_images']:.2f}%), fake-quant vs "
                      f"deploy {r['fake_quant_vs_deploy']['top1_agreement']:.2f}%")
        write_result(NAME, {"settings": settings, "float_checkpoint": ckpt.name, "runs": runs})


if __name__ == "__main__":
    main()
