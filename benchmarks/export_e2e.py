"""Exported artifacts on real data and their speed: the trained Fashion-MNIST ResNet-20.

Uses the SRQ + DropBits runs written by ``benchmarks.fmnist_accuracy`` (W4A4 and W3A3) and:
1. exports each as QDQ ONNX (verified at export on t10k batches; also with ``--float-unfused``
   and ``--requant``) and as packed safetensors;
2. evaluates the PyTorch checkpoint, the ONNX file (onnxruntime, default optimisation) and the
   packed file on all 10,000 t10k images: top-1 and prediction agreement;
3. measures onnxruntime latency (2 threads, batch 1 and 16, median of 30 alternating rounds)
   of the exported model against the float ONNX export of the same network, listing the
   integer kernels run;
   ``--float-unfused`` stores the convs that cannot fuse with float weights (still exact);
   with ``--requant`` the residual/stem conv outputs get calibrated int8 Q/DQ too (see notes);
4. compares file sizes with the limit Σ bits·params/8;
5. trains (once, cached) the same run with ``srq quantize --output-bits 8`` (residual-branch,
   shortcut and stem outputs quantized in training), exports it as exact QDQ ONNX (verified)
   and reports its top-1, agreement and latency next to the others.

    python -m benchmarks.export_e2e
"""

from __future__ import annotations

import argparse
import os

import torch

from benchmarks.common import RESULTS, write_result
from srqcli.data import DataSpec, load_datasets, make_loaders
from srqcli.errors import SrqError
from srqcli.config import load_recipe
from srqcli.export.artifacts import load_any
from srqcli.export.bench import float_onnx, integer_ops, latency_table
from srqcli.export.workflow import eager_quantizers, run_export
from srqcli.io.quantized import load_model
from srqcli.report.stats import layer_stats
from srqcli.workflow.quantize import run_quantize

CACHE = RESULTS / "cache"
DATA = "/usr/share/datasets/fashion-mnist"


def output_bits_run(run, bits: int = 8):
    """``run``'s recipe trained again with ``--output-bits bits`` (cached next to it)."""
    out = run.with_name(f"{run.name}_out{bits}")
    if not (out / "model.safetensors").is_file():
        recipe = load_recipe(str(run / "recipe.toml"))
        recipe.quant.output_bits = bits
        run_quantize(recipe, out, overwrite=True)
    return out


@torch.no_grad()
def predictions(model, loader) -> tuple[torch.Tensor, torch.Tensor]:
    preds, labels = [], []
    for x, y in loader:
        preds.append(model(x).argmax(1))
        labels.append(y)
    return torch.cat(preds), torch.cat(labels)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bits", type=int, nargs="+", default=[4, 3])
    p.add_argument("--data", default=DATA)
    args = p.parse_args()
    torch.set_num_threads(2)
    bundle = load_datasets(DataSpec(source=args.data, batch_size=250))
    _, val = make_loaders(bundle, 250, 0, seed=0)
    results = {}
    for bits in args.bits:
        run = CACHE / f"srq_w{bits}_lsb_s0"
        out = CACHE / f"export_w{bits}"
        out.mkdir(exist_ok=True)
        row: dict = {"refused": {}}
        exports = {}
        for name, file, kwargs in (
                ("onnx", "model.onnx", {"fmt": "onnx"}),
                ("onnx_float_unfused", "model.float-unfused.onnx", {"fmt": "onnx", "float_unfused": True}),
                ("onnx_requant", "model.requant.onnx", {"fmt": "onnx", "requant": True}),
                ("onnx_packed", "model.packed.onnx", {"fmt": "onnx", "layout": "packed"}),
                ("safetensors", "model.packed.safetensors", {"fmt": "safetensors"})):
            try:
                exports[name] = run_export(str(run), data=args.data, out=out / file, **kwargs)
            except SrqError as exc:  # verification refused the artifact: record why
                row["refused"][name] = str(exc)
                exports[name] = run_export(str(run), data=args.data, verify=False, out=out / file, **kwargs)
        run8 = output_bits_run(run)
        try:
            exports["onnx_output8"] = run_export(str(run8), data=args.data, out=out / "model.output8.onnx", fmt="onnx")
        except SrqError as exc:
            row["refused"]["onnx_output8"] = str(exc)
            exports["onnx_output8"] = run_export(str(run8), data=args.data, verify=False,
                                                 out=out / "model.output8.onnx", fmt="onnx")
        model, info = load_model(run / "model.safetensors")
        with eager_quantizers():
            ref, labels = predictions(model, val)
            packed, _ = predictions(load_any(exports["safetensors"].path)[0], val)
            ref8, _ = predictions(load_model(run8 / "model.safetensors")[0], val)
        row["pytorch_top1"] = float((ref == labels).float().mean() * 100)
        row["output8_pytorch_top1"] = float((ref8 == labels).float().mean() * 100)
        row["packed_safetensors_identical"] = bool(torch.equal(packed, ref))
        for name in ("onnx", "onnx_float_unfused", "onnx_requant", "onnx_packed", "onnx_output8"):
            pred, _ = predictions(load_any(exports[name].path)[0], val)
            row[f"{name}_top1"] = float((pred == labels).float().mean() * 100)
            row[f"{name}_agreement"] = float((pred == (ref8 if name == "onnx_output8" else ref)).float().mean() * 100)
        onnx_exact, onnx_requant, onnx_packed, st = (exports[k] for k in ("onnx", "onnx_requant", "onnx_packed", "safetensors"))
        float_model, _ = load_model(next(CACHE.glob("resnet20_fmnist_float_*.safetensors")))
        fl = float_onnx(float_model, (1, info.in_channels, info.image_size, info.image_size), out / "float.onnx")
        shape = (info.in_channels, info.image_size, info.image_size)
        row["load_average"] = list(os.getloadavg())
        timed = {"onnx": onnx_exact.path, "onnx_float_unfused": exports["onnx_float_unfused"].path,
                 "onnx_requant": onnx_requant.path, "onnx_output8": exports["onnx_output8"].path}
        row.update(latency_table({"float": fl, **timed}, shape, threads=2, rounds=30))
        row["integer_ops"] = {name: integer_ops(path) for name, path in timed.items()}
        stats = layer_stats(model)
        limit = sum(s.params * s.weight_bits for s in stats) / 8
        row["bytes"] = {"float_onnx": fl.stat().st_size, "qdq_onnx": onnx_exact.bytes,
                        "qdq_float_unfused_onnx": exports["onnx_float_unfused"].bytes,
                        "packed_onnx": onnx_packed.bytes, "packed_safetensors": st.bytes,
                        "output8_qdq_onnx": exports["onnx_output8"].bytes,
                        "checkpoint": (run / "model.safetensors").stat().st_size,
                        "limit_quantized_weights": limit}
        results[f"w{bits}a{bits}"] = row
        print(bits, row)
    write_result("export_e2e", {"runs": results})


if __name__ == "__main__":
    main()
