"""onnxruntime latency of srq's ONNX exports of torchvision ResNet-18 and MobileNet-V2 (224×224, 1000 classes).

Speed only: the weights are random (BatchNorm randomised so that nothing is deduplicated,
see ``srqcli.export.demo``) and the quantizers are calibrated on a few random batches, so
there is no accuracy to report. For each bit-width the model is exported as exact ``qdq``,
``qdq --float-unfused`` (exact too) and ``qdq --requant`` (without verification: an untrained network's outputs are near ties,
and the exporters' exactness is the tests' job); every export and the float ONNX export of
the same network are timed side by side in alternating rounds (2 threads, batch 1 and 16),
and the integer kernels onnxruntime runs and its per-op-type profile at batch 1 are recorded.
``w{b}a{b}_output8`` is the network quantized with ``output_bits=8`` (residual-branch, shortcut
and stem outputs quantized in the model: ``srq quantize``'s default), exported as exact ``qdq``:
the file a user gets with no flags. The other rows are the network quantized with
``--output-bits 0`` (layer inputs only, the published protocols).

    python -m benchmarks.export_latency                      # ResNet-18 and MobileNet-V2
"""

from __future__ import annotations

import argparse
import copy
import os

import torch

from benchmarks.common import RESULTS, write_result
from srqcli.export.bench import float_onnx, integer_ops, latency_table, op_profile
from srqcli.export.demo import quantize_untrained, randomize_batchnorm
from srqcli.export.workflow import export_onnx
from srqcli.models import build_model

SHAPE = (3, 224, 224)
CLASSES = 1000
#: exports timed per bit-width: name suffix → export_onnx options
VARIANTS = {"": {}, "_float_unfused": {"float_unfused": True}, "_requant": {"requant": True}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", nargs="+", default=["resnet18", "mobilenet_v2"])
    p.add_argument("--bits", type=int, nargs="+", default=[4, 3])
    p.add_argument("--rounds", type=int, default=20, help="alternating rounds per batch size")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    args = p.parse_args()
    torch.set_num_threads(2)
    for arch in args.arch:
        measure(arch, args)


def measure(arch: str, args: argparse.Namespace) -> None:
    """Export ``arch`` in every variant, time it against its float ONNX, write the result."""
    out = RESULTS / "cache" / f"export_latency_{arch}"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model(arch, CLASSES, SHAPE[0])).eval()
    paths = {"float": float_onnx(copy.deepcopy(model), (1, *SHAPE), out / "float.onnx")}
    gen = torch.Generator().manual_seed(1)
    calib = [torch.randn(8, *SHAPE, generator=gen) for _ in range(2)]
    for bits in args.bits:
        qmodel = quantize_untrained(copy.deepcopy(model), (8, *SHAPE), weight_bits=bits, act_bits=bits)
        for variant, opts in VARIANTS.items():
            name = f"w{bits}a{bits}{variant}"
            paths[name] = export_onnx(qmodel, None, out / f"{name}.onnx", shape=(1, *SHAPE), verify=False,
                                      batches=calib, **opts).path
        qmodel = quantize_untrained(copy.deepcopy(model), (8, *SHAPE), weight_bits=bits, act_bits=bits, output_bits=8)
        name = f"w{bits}a{bits}_output8"
        paths[name] = export_onnx(qmodel, None, out / f"{name}.onnx", shape=(1, *SHAPE), verify=False,
                                  batches=calib).path
    load_before = os.getloadavg()
    table = latency_table(paths, SHAPE, threads=args.threads, rounds=args.rounds)
    result = {
        "arch": arch, "input": list(SHAPE), "classes": CLASSES, "threads": args.threads,
        "rounds": args.rounds, "weights": "random (speed only: no accuracy claims)",
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        **table,
        "integer_ops": {name: integer_ops(path) for name, path in paths.items() if name != "float"},
        "profile_ms_b1": {name: op_profile(path, (1, *SHAPE), threads=args.threads)
                          for name, path in paths.items()},
        "bytes": {name: os.path.getsize(path) for name, path in paths.items()},
    }
    print(result)
    write_result(f"export_latency_{arch}", result)


if __name__ == "__main__":
    main()
