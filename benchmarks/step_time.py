"""Training step time and peak memory: float vs SRQ (windowed, fused) vs naive full-grid SRQ vs LSQ,
and float, SRQ and LSQ as a whole-model ``torch.compile`` (``*-compiled``, timing only).

Protocol (docs/benchmark-protocol.md): all configurations live in one process and are timed
alternately (A B C A B C …) after warm-up; the reported number is the median of per-round
ratios to float, and for SRQ the median of per-round ratios to LSQ on the same model and batch
(issue #5's target: SRQ's step at most 1.3× LSQ's). Peak memory: each configuration runs in its own subprocess; we report its
peak RSS minus that of a process that only builds the model and the batch (for fused SRQ, one
that also loaded its compiled kernels, a fixed cost reported separately). The compiled rows
print how many graphs inductor compiled for the model (1: no graph break, no recompile).

    python benchmarks/step_time.py [--arch resnet20] [--bits 3] [--batch 128] [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from torch._dynamo.testing import CompileCounterWithBackend

from srqcli.config import QuantConfig
from srqcli.core import srq as srq_core
from srqcli.models import build_model
from srqcli.nn.quantizer import SRQQuantizer
from srqcli.nn.surgery import quantize_model

EAGER_CONFIGS = ("float", "srq", "srq-eager", "srq-fullgrid", "lsq")
COMPILED_CONFIGS = ("float-compiled", "srq-compiled", "lsq-compiled")
CONFIGS = EAGER_CONFIGS + COMPILED_CONFIGS
#: Graphs inductor compiled per compiled configuration (filled by :func:`build`).
COMPILE_COUNTERS: dict[str, CompileCounterWithBackend] = {}


class FullGridQuantizer(SRQQuantizer):
    """SRQ with the naive full-grid surrogate (π over all 2^b points): the baseline."""

    def forward(self, x):
        g = self.grid
        return srq_core.full_grid_surrogate(x, self.alpha, self.sigma, g.kmin, g.kmax, self.pi_mode)


def build(config: str, arch: str, bits: int, batch: int, channels: int, size: int):
    torch.manual_seed(0)
    model = build_model(arch, 10, channels)
    x = torch.randn(batch, channels, size, size)
    y = torch.randint(0, 10, (batch,))
    base = config.removesuffix("-compiled")
    if base != "float":
        method = "lsq" if base == "lsq" else "srq"
        quantize_model(model, QuantConfig(method=method, weight_bits=bits, act_bits=bits), [x[:32]])
        if config == "srq-fullgrid":
            for m in model.modules():
                if isinstance(m, SRQQuantizer):
                    m.__class__ = FullGridQuantizer
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    if config in COMPILED_CONFIGS:
        COMPILE_COUNTERS[config] = CompileCounterWithBackend("inductor")
        model = torch.compile(model, backend=COMPILE_COUNTERS[config])
    return model, opt, x, y


def step(model, opt, x, y) -> None:
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def set_impl(config: str) -> None:
    srq_core.set_fused(config != "srq-eager")


def timed_step(config, model, opt, x, y) -> float:
    set_impl(config)
    t0 = time.perf_counter()
    step(model, opt, x, y)
    return time.perf_counter() - t0




def child(args) -> None:
    config = args.child
    if config == "build-only":  # baseline: model and batch, nothing run
        build("float", args.arch, args.bits, args.batch, args.channels, args.size)
        return
    if config == "build-compiled":  # baseline of fused SRQ: plus its compiled kernels, loaded
        model, opt, x, y = build("srq", args.arch, args.bits, args.batch, args.channels, args.size)
        set_impl("srq")
        step(model, opt, x[:2], y[:2])
        return
    model, opt, x, y = build(config, args.arch, args.bits, args.batch, args.channels, args.size)
    set_impl(config)
    for _ in range(3):
        step(model, opt, x, y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--bits", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--child", default=None)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-timing", action="store_true", help="keep the timing of the last result file")
    args = p.parse_args()
    if args.child:
        child(args)
        return
    from benchmarks.common import RESULTS, write_result

    name = f"step_time_{args.arch}_w{args.bits}_b{args.batch}"
    if args.skip_timing:
        old = json.loads((RESULTS / f"{name}.json").read_text())
        ratios, medians, args.rounds = old["time_ratio_to_float"], old["median_step_s"], old["rounds"]
        srq_over_lsq = old.get("srq_time_ratio_to_lsq")
        old_graphs = old.get("compiled_graphs", {})
    else:
        setups = {c: build(c, args.arch, args.bits, args.batch, args.channels, args.size) for c in CONFIGS}
        for c, s in setups.items():  # warm-up (includes the one-off torch.compile of the kernels)
            for _ in range(args.warmup):
                timed_step(c, *s)
        times: dict[str, list[float]] = {c: [] for c in CONFIGS}
        for _ in range(args.rounds):
            for c in CONFIGS:
                times[c].append(timed_step(c, *setups[c]))
        ratios = {c: statistics.median(t / f for t, f in zip(times[c], times["float"])) for c in CONFIGS}
        medians = {c: statistics.median(times[c]) for c in CONFIGS}
        srq_over_lsq = statistics.median(s / q for s, q in zip(times["srq"], times["lsq"]))
        old_graphs = {}
    memory = {}
    if not args.skip_memory:
        # Children are measured one by one in increasing expected size, since RUSAGE_CHILDREN
        # reports the maximum over all finished children.
        order = ["build-only", "build-compiled", "float", "lsq", "srq-eager", "srq", "srq-fullgrid"]
        peaks = {}
        for c in order:
            proc = subprocess.run(
                [sys.executable, "-c",
                 "import resource,subprocess,sys; subprocess.run(sys.argv[1:], check=True); "
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
                 sys.executable, "-m", "benchmarks.step_time", "--arch", args.arch, "--bits", str(args.bits),
                 "--batch", str(args.batch), "--channels", str(args.channels), "--size",
                 str(args.size), "--child", c],
                check=True, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
            peaks[c] = int(proc.stdout.strip().splitlines()[-1])
        # The fused SRQ process also holds its compiled kernels (fixed size, independent of the
        # batch): its baseline includes them, and the overhead is reported on its own.
        base = {c: peaks["build-compiled" if c == "srq" else "build-only"] for c in EAGER_CONFIGS}
        train = {c: peaks[c] - base[c] for c in EAGER_CONFIGS}
        memory = {"peak_rss_kib": peaks, "training_kib": train,
                  "compiled_kernels_kib": peaks["build-compiled"] - peaks["build-only"],
                  "ratio_to_float": {c: train[c] / train["float"] for c in EAGER_CONFIGS}}
    print(f"{args.arch} W{args.bits}A{args.bits}, batch {args.batch}, {args.channels}x{args.size}x{args.size}, "
          f"{torch.get_num_threads()} threads, {args.rounds} alternating rounds")
    graphs = {c: n.frame_count for c, n in COMPILE_COUNTERS.items()} or old_graphs
    for c in medians:  # an old result kept by --skip-timing may predate a configuration
        mem = f"  memory {memory['ratio_to_float'][c]:.2f}x float" if c in memory.get("ratio_to_float", {}) else ""
        compiled = f"  {graphs[c]} graph(s) compiled" if c in graphs else ""
        print(f"  {c:14s} step {medians[c] * 1000:8.1f} ms   time {ratios[c]:.2f}x float{mem}{compiled}")
    if srq_over_lsq is not None:
        print(f"  srq step time {srq_over_lsq:.2f}x lsq's (same run; target <= 1.3x)")
    write_result(name, {
        "arch": args.arch, "bits": args.bits, "batch": args.batch,
        "input": [args.channels, args.size, args.size], "rounds": args.rounds,
        "median_step_s": medians, "time_ratio_to_float": ratios, "srq_time_ratio_to_lsq": srq_over_lsq,
        "compiled_graphs": graphs, "memory": memory})


if __name__ == "__main__":
    main()
