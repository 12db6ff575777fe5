"""Render BENCHMARKS.md from the JSON results in ``benchmarks/results/`` (never by hand).

    python -m benchmarks.render
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS
from benchmarks.grid import load_suite
from benchmarks.grid_render import env_line as _env_line
from benchmarks.grid_render import mean_sd as _mean_sd
from benchmarks.grid_render import render_part

OUT = Path(__file__).parent.parent / "BENCHMARKS.md"


def _provenance(r: dict[str, Any], command: str | None = None) -> list[str]:
    """The command that reproduces a result and the machine it ran on (every section has both)."""
    return [f"Command: `{command or r['env']['command']}`", "", f"Machine: {_env_line(r['env'])}"]

CONFIGS = Path(__file__).parent / "configs"
#: The grids of issue #5 in the order BENCHMARKS.md shows them: (heading, config file).
SUITES = (
    ("CPU suite: all layers quantized", "cpu_suite.toml"),
    ("Issue #5 targets on CPU: Fashion-MNIST ResNet-20, SRQ against float, LSQ and RQ",
     "cpu_resnet20_targets.toml"),
    ("CPU suite, first and last layers at 8 bits (LSQ protocol)", "cpu_first_last8.toml"),
    ("ResNet-20 probe, first and last layers at 8 bits", "cpu_resnet20_fl8.toml"),
    ("GPU suite: ResNet-20, all methods (all layers; then first/last at 8 bits)", "gpu_suite.toml"),
    ("Ablation: SRQ's π_m in the backward", "ablation_pi_mode.toml"),
    ("Ablation: SRQ's edge window and σ cap", "ablation_window_sigma.toml"),
    ("Ablation: DropBits variants, rates and schedules", "ablation_dropbits.toml"),
    ("Ablation: cluster promotion over training", "ablation_cluster.toml"),
)


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def grid_sections() -> list[str]:
    """The method-comparison grids (benchmarks/grid.py), each with its command; "not run yet"
    for those without results."""
    lines = ["## Method comparison: SRQ against RQ, LSQ, STE, SLB and DQ", "",
             ("Every table comes from one grid run (`benchmarks/grid.py`, config in "
              "`benchmarks/configs/`): the same float start, epochs, schedule and data order per "
              "seed for every method; time per epoch and peak memory are ratios to the float model "
              "fine-tuned in the same grid, each cell in its own process."), ""]
    for heading, name in SUITES:
        lines += [f"### {heading}", ""]
        for cfg in load_suite(CONFIGS / name):
            lines += render_part(cfg, CONFIGS / name, level=4)
            if name == "cpu_resnet20_targets.toml":
                lines += targets_lines(cfg)
    return lines


#: Issue #5: SRQ (all layers) at most this many points below float, per bit-width.
TARGET_GAP = {4: 0.3, 3: 0.7, 2: 2.0}


def targets_lines(cfg: dict[str, Any]) -> list[str]:
    """Issue #5's ResNet-20 targets, checked on the grid's means (met / missed by how much)."""
    path = RESULTS / f"grid_{cfg['name']}.json"
    if not path.is_file():
        return []
    runs = json.loads(path.read_text())["runs"]

    def mean(method: str, bits: int | None) -> tuple[float, int] | None:
        tag = f"/w{bits}a{bits}" if bits else ""
        vals = [r["top1"] for k, r in runs.items() if k.startswith(f"resnet20/{method}{tag}/s")]
        return (statistics.mean(vals), len(vals)) if vals else None

    def shown(m: tuple[float, int]) -> str:
        return f"{m[0]:.2f} ({m[1]} seed{'s' if m[1] != 1 else ''})"

    lines = ["| target | SRQ | reference | difference | met? |", "|---|---:|---:|---:|:-:|"]
    base = mean("float", None)
    for bits, gap in TARGET_GAP.items():
        srq = mean("srq", bits)
        if srq and base:
            d = base[0] - srq[0]
            lines.append(f"| W{bits}A{bits} within {gap} of float | {shown(srq)} | {shown(base)} | "
                         f"{d:.2f} below | "
                         f"{'yes' if round(d, 2) <= gap else f'no, by {d - gap:.2f}'} |")
    for other in ("lsq", "rq"):
        for bits in (2, 3):
            srq, ref = mean("srq", bits), mean(other, bits)
            if srq and ref:
                d = srq[0] - ref[0]
                lines.append(f"| W{bits}A{bits} at or above {other.upper()} | {shown(srq)} | "
                             f"{shown(ref)} | {d:+.2f} | "
                             f"{'yes' if round(d, 2) >= 0 else f'no, by {-d:.2f}'} |")
    return lines + [""]


def step_time_section() -> list[str]:
    lines = ["## Training step time and memory (CPU)", ""]
    found = sorted(RESULTS.glob("step_time_*.json"))
    if not found:
        return lines + ["_not run yet_", ""]
    for path in found:
        r = json.loads(path.read_text())
        lines += [f"{r['arch']} W{r['bits']}A{r['bits']}, batch {r['batch']}, input "
                  f"{'×'.join(map(str, r['input']))}, median of {r['rounds']} alternating rounds.",
                  "", *_provenance(r), "",
                  "| configuration | step (ms, context) | time / float | training memory / float |",
                  "|---|---:|---:|---:|"]
        mem = r.get("memory", {}).get("ratio_to_float", {})
        for c, t in r["median_step_s"].items():
            m = f"{mem[c]:.2f}×" if c in mem else "—"
            lines.append(f"| {c} | {t * 1000:.0f} | {r['time_ratio_to_float'][c]:.2f}× | {m} |")
        if r.get("srq_time_ratio_to_lsq") is not None:
            ratio = r["srq_time_ratio_to_lsq"]
            lines += ["", f"SRQ's step time is **{ratio:.2f}× LSQ's** (median of per-round ratios, same "
                      f"run; target ≤ 1.3×: {'met' if ratio <= 1.3 else f'missed by {ratio - 1.3:.2f}'})."]
        if "compiled_kernels_kib" in r.get("memory", {}):
            m = r["memory"]
            lines += ["", f"Training memory = peak RSS minus a process holding the model and batch "
                      f"(for `srq` also its compiled kernels: a fixed {m['compiled_kernels_kib'] / 1024:.0f} MiB, "
                      f"independent of the batch). Float training: {m['training_kib']['float'] / 1024:.0f} MiB, "
                      f"SRQ: {m['training_kib']['srq'] / 1024:.0f} MiB."]
        lines.append("")
    lines += ["`srq` is the shipped implementation (edge-form windowed backward, `torch.compile`d); "
              "`srq-eager` the same math without fusion; `srq-fullgrid` the naive surrogate over "
              "all 2^b grid points (memory N·2^b); `lsq` the LSQ baseline at the same bits. Targets: time ≤ 1.5× float, memory ≤ 1.5× float.",
              ""]
    return lines


def throughput_section() -> list[str]:
    lines = ["## Training throughput at ImageNet scale: ResNet-18, 224×224, synthetic input", ""]
    found = sorted(RESULTS.glob("throughput_*.json"))
    if not found:
        return lines + ["_not run yet_: `python -m benchmarks.throughput --device cuda`", ""]
    for path in found:
        r = json.loads(path.read_text())
        gpu = f" ({r['env']['cuda']})" if r["device"] == "cuda" and r["env"].get("cuda") else ""
        lines += [f"{r['arch']} at {r['size']}×{r['size']}, batch {r['batch']}, {r['device']}{gpu}, "
                  f"{'bf16 autocast' if r['amp'] else 'float32'}; srq's training loop on synthetic "
                  f"batches already on the device (speed only; no data loading); median of "
                  f"{r['rounds']} alternating rounds × {r['steps']} steps. Quantized rows at "
                  f"W{r['bits']}A{r['bits']}, all layers.", "",
                  *_provenance(r), "",
                  "| configuration | images/s | hours per ImageNet epoch (1.281M images) | "
                  "step time ÷ float | step time ÷ LSQ |", "|---|---:|---:|---:|---:|"]
        for c, s in r["summary"].items():
            vs_lsq = f"{s['time_ratio_to_lsq']:.2f}×" if "time_ratio_to_lsq" in s else "—"
            lines.append(f"| {c} | {s['images_per_s']:,.0f} | {s['imagenet_epoch_hours']:.2f} | "
                         f"{s['time_ratio_to_float']:.2f}× | {vs_lsq} |")
        lines.append("")
    return lines


def accuracy_section() -> list[str]:
    lines = ["## Accuracy on real data: Fashion-MNIST ResNet-20 (all layers quantized)", ""]
    found = sorted(RESULTS.glob("fmnist_accuracy_e*.json"),
                   key=lambda p: int(p.stem.rsplit("_e", 1)[1]))
    if not found:
        return lines + ["_not run yet_", ""]
    for path in found:
        lines += _accuracy_table(json.loads(path.read_text()))
    return lines


def _accuracy_command(s: dict[str, Any]) -> str:
    """The command that reproduces the whole table (rows may come from several invocations)."""
    args = [f"--pretrain-epochs {s['pretrain_epochs']}", f"--epochs {s['epochs']}", f"--lr {s['lr']:g}",
            f"--quant-lr {s['quant_lr']:g}"]
    if s.get("train_limit"):
        args.append(f"--train-limit {s['train_limit']}")
    if s.get("output_bits"):
        args.append(f"--output-bits {s['output_bits']}")
    args += [f"--bits {' '.join(map(str, sorted(s['bits'], reverse=True)))}",
             f"--variants {' '.join(s['variants'])}", f"--seeds {' '.join(map(str, s['seeds']))}"]
    return "python -m benchmarks.fmnist_accuracy " + " ".join(args)


def _accuracy_table(r: dict[str, Any]) -> list[str]:
    s = r["settings"]
    runs = r["runs"]
    lines = [
        f"### {s['epochs']} fine-tuning epochs", "",
        f"Float ResNet-20 trained {s['pretrain_epochs']} epochs on the 60k training images "
        f"({r['float_checkpoint']}); every row then fine-tunes {s['epochs']} epochs from that "
        f"checkpoint with the same schedule (Adam, cosine, lr {s['lr']}, quantizer lr "
        f"{s['quant_lr']}"
        + (f", on a fixed {s['train_limit']}-image subset of the training split" if s.get("train_limit") else "")
        + "). Top-1 on the held-out 10k t10k split. Every Conv2d and Linear quantized (weights "
        "and input activations; network input 8 bits). DropBits: "
        f"`lsb`, p = {s['drop_rate']} annealed to 0 over the last epoch, then BatchNorm re-estimation.",
        "", *_provenance(r, _accuracy_command(s)), ""]
    seeds = sorted({k.rsplit('/s', 1)[1] for k in runs})
    float_top1 = [runs[f"float/s{x}"]["top1"] for x in seeds if f"float/s{x}" in runs]
    targets = {4: 0.5, 3: 1.0, 2: 3.0}
    lines += ["Epoch times are context only (runs were timed under different machine load; the "
              "step-time section above is the speed measurement).", "",
              "| model | top-1 % | points below float | target | met? | epoch time (s) |", "|---|---:|---:|---:|:-:|---:|"]
    if float_top1:
        ep = statistics.mean(runs[f"float/s{seeds[0]}"]["epoch_seconds"])
        lines.append(f"| float, fine-tuned equally | {_mean_sd(float_top1)} | — | — | — | {ep:.0f} |")
    for bits in sorted(s["bits"], reverse=True):
        for variant in s["variants"]:
            vals = [runs[k]["top1"] for k in runs if k.startswith(f"w{bits}a{bits}/{variant}/")]
            if not vals:
                continue
            name = f"SRQ W{bits}A{bits}" + (" + DropBits" if variant != "none" else " (no DropBits)")
            # Top-1 is a count over 10,000 images, i.e. a multiple of 0.01: compare at that
            # resolution, not with binary floating-point noise (90.95 − 89.95 = 1.0000000000000142).
            gap = round(statistics.mean(float_top1) - statistics.mean(vals), 2) if float_top1 else float("nan")
            target = targets.get(bits)
            met = "yes" if target is not None and gap <= target else "no"
            ep = statistics.mean(next(runs[k] for k in runs if k.startswith(f"w{bits}a{bits}/{variant}/"))["epoch_seconds"])
            lines.append(f"| {name} | {_mean_sd(vals)} | {gap:.2f} | ≤ {target} | {met} | {ep:.0f} |")
    lines.append("")
    return lines


def _load_text(load: dict[str, list[float]]) -> str:
    """The 1-minute load average around the timings, and whether it means contention."""
    worst = max(load["before"][0], load["after"][0])
    note = " — **measured under load** (other jobs on the 2 cores): absolute times are inflated, " \
           "ratios are side by side but noisy" if worst > 1.0 else ""
    return f"Load average (1 min) before/after the timings: {load['before'][0]:.2f} / {load['after'][0]:.2f}{note}."


def export_latency_section() -> list[str]:
    return [line for arch in ("resnet18", "mobilenet_v2") for line in _export_latency(arch)]


def _export_latency(arch: str) -> list[str]:
    name = {"resnet18": "ResNet-18", "mobilenet_v2": "MobileNet-V2"}[arch]
    lines = [f"## Exported {name}: onnxruntime latency (random weights, speed only)", ""]
    r = _load(f"export_latency_{arch}")
    if r is None:
        return lines + ["_not run yet_", ""]
    quantized = list(r["integer_ops"])
    lines += [f"torchvision {name} at 224×224, 1000 classes, **random weights** (BatchNorm randomised, "
              "quantizers calibrated on random batches): these numbers are about speed only, no accuracy "
              f"claim. onnxruntime at its default level, {r['threads']} intra-op threads; every model timed "
              f"side by side in {r['rounds']} alternating rounds per batch size, median time and median "
              "per-round speed-up over the float ONNX export of the same network (BatchNorm folded, "
              "same builder). `w4a4`/`w3a3` are the exact qdq export, `float unfused` is `qdq --float-unfused` "
              "(exact too), `requant` is `qdq --requant` (not bit-exact), all three of the network quantized "
              "with `--output-bits 0`; `output8` is the network quantized with srq's default `--output-bits 8` "
              "(residual, shortcut and stem outputs quantized in the model), exported as exact qdq: **the file "
              "`srq quantize` then `srq export` give with no flags**. Target: ≥ 2× float.",
              "", *_provenance(r), "",
              _load_text(r["load_average"]), "",
              "| export | batch | ms | float ms | speed-up | integer kernels run | file MB (float "
              f"{r['bytes']['float'] / 1e6:.1f}) |", "|---|---:|---:|---:|---:|---|---:|"]
    for b in (1, 16):
        for n in quantized:
            ops = ", ".join(f"{k} ×{v}" for k, v in r["integer_ops"][n].items())
            lines.append(f"| {n.replace('_', ' ')} | {b} | {r['latency_ms'][f'{n}_b{b}']:.1f} | "
                         f"{r['latency_ms'][f'float_b{b}']:.1f} | {r['speedup'][f'{n}_b{b}']:.2f}× | {ops} | "
                         f"{r['bytes'][n] / 1e6:.1f} |")
    lines += ["", "Where the time goes at batch 1 (onnxruntime profiler, ms per run by op type, top 5):", ""]
    for n, ops in r["profile_ms_b1"].items():
        top = ", ".join(f"{k} {v:.1f}" for k, v in list(ops.items())[:5])
        lines.append(f"- {n.replace('_', ' ')}: {top}")
    lines.append("")
    return lines


def export_section() -> list[str]:
    lines = ["## Exported artifacts: Fashion-MNIST ResNet-20 (trained, SRQ + DropBits)", ""]
    r = _load("export_e2e")
    if r is None:
        return lines + ["_not run yet_", ""]
    lines += ["The W4A4 and W3A3 runs of the accuracy benchmark above, exported and evaluated on all "
              "10,000 t10k images; onnxruntime at its default optimisation level, 2 threads, every "
              "model timed side by side in 30 alternating rounds (median time, median per-round "
              "speed-up over the float ONNX export). `qdq` is the exact export (verified at export); "
              "`--float-unfused` stores the convs that cannot fuse with float32 weights (same values, "
              "exact); `--requant` adds calibrated int8 Q/DQ on residual-branch and stem conv outputs "
              "so every conv fuses (not bit-exact). `--output-bits 8` is the same run trained again with "
              "`srq quantize --output-bits 8`: those outputs are quantized in training, so its exact qdq "
              "export fuses every conv (its agreement is with its own PyTorch model).",
              "", *_provenance(r), "",
              "| model | PyTorch top-1 | ORT top-1 (qdq) | agreement | ORT top-1 (float-unfused) | agreement "
              "| ORT top-1 (requant) | agreement | packed ONNX top-1 | packed safetensors identical "
              "| PyTorch top-1 (--output-bits 8) | ORT top-1 (qdq) | agreement |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---:|"]
    for name, row in r["runs"].items():
        cells = " | ".join(f"{row[f'{k}_top1']:.2f} | {row[f'{k}_agreement']:.2f}%"
                           for k in ("onnx", "onnx_float_unfused", "onnx_requant"))
        out8 = (f"{row['output8_pytorch_top1']:.2f} | {row['onnx_output8_top1']:.2f} | "
                f"{row['onnx_output8_agreement']:.2f}%") if "onnx_output8_top1" in row else "— | — | —"
        lines.append(f"| {name.upper()} | {row['pytorch_top1']:.2f} | {cells} | {row['onnx_packed_top1']:.2f} | "
                     f"{'yes' if row['packed_safetensors_identical'] else 'NO'} | {out8} |")
    for name, row in r["runs"].items():
        for artifact, why in row.get("refused", {}).items():
            lines.append(f"\n**{name.upper()} {artifact}: refused by export verification** ({why}); the "
                         "numbers in its columns are from the same export written with `--no-verify`.")
    lines += ["", "| model | batch | float ONNX (ms) | qdq (ms) | speed-up | --float-unfused (ms) | speed-up "
              "| --requant (ms) | speed-up | --output-bits 8 qdq (ms) | speed-up | load (1 min) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in r["runs"].items():
        lat, up = row["latency_ms"], row["speedup"]
        for b in (1, 16):
            cells = " | ".join(f"{lat[f'{k}_b{b}']:.2f} | {up[f'{k}_b{b}']:.2f}×" if f"{k}_b{b}" in lat else "— | —"
                               for k in ("onnx", "onnx_float_unfused", "onnx_requant", "onnx_output8"))
            lines.append(f"| {name.upper()} | {b} | {lat[f'float_b{b}']:.2f} | {cells} | {row['load_average'][0]:.2f} |")
    if max(row["load_average"][0] for row in r["runs"].values()) > 1.0:
        lines += ["", "**Measured under load** (load average > 1 on 2 cores: other jobs running): absolute "
                  "times are inflated; the ratios are side by side but noisy."]
    lines += ["", "Integer kernels onnxruntime executes: " + "; ".join(
        f"{n.upper()} " + ", ".join(f"{k.removeprefix('onnx').replace('_', ' ').strip() or 'qdq'} "
                                    f"({', '.join(f'{op} ×{c}' for op, c in ops.items())})"
                                    for k, ops in row["integer_ops"].items())
        for n, row in r["runs"].items()), "",
        "| model | float ONNX | qdq ONNX | --float-unfused ONNX | packed ONNX (÷ float) | packed safetensors "
        "| Σ bits·params/8 (quantized weights) | checkpoint |",
        "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in r["runs"].items():
        b = row["bytes"]
        lines.append(f"| {name.upper()} | {b['float_onnx']:,} | {b['qdq_onnx']:,} | {b['qdq_float_unfused_onnx']:,} "
                     f"| {b['packed_onnx']:,} ({b['packed_onnx'] / b['float_onnx']:.3f}×) | {b['packed_safetensors']:,} | "
                     f"{b['limit_quantized_weights']:,.0f} | {b['checkpoint']:,} |")
    lines.append("")
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def deploy_section() -> list[str]:
    lines = ["## Deployed accuracy: Fashion-MNIST ResNet-20, trained vs deploy model vs onnxruntime", ""]
    r = _load("deploy_accuracy")
    if r is None:
        return lines + ["_not run yet_: `python -m benchmarks.deploy_accuracy`", ""]
    s, runs = r["settings"], r["runs"]
    command = ("python -m benchmarks.deploy_accuracy "
               f"--pretrain-epochs {s['pretrain_epochs']} "
               + (f"--pretrain-limit {s['pretrain_limit']} " if s.get("pretrain_limit") else "")
               + f"--epochs {s['epochs']} --lr {s['lr']:g} "
               f"--quant-lr {s['quant_lr']:g} --train-limit {s['train_limit']} --bits "
               + " ".join(k.split("a")[0][1:] for k in runs))
    lines += [f"Issue #13's acceptance test. `srq quantize` defaults (SRQ, DropBits `{s['variant']}` p = "
              f"{s['drop_rate']} annealed over the last epoch then BatchNorm re-estimated, `--output-bits "
              f"{s['output_bits']}`, all layers quantized, network input 8 bits), from the float ResNet-20 of "
              f"the accuracy benchmark ({r['float_checkpoint']}: {_count(s['pretrain_epochs'], 'epoch')} on "
              + (f"a fixed {s['pretrain_limit']}-image subset of the training split"
                 if s.get("pretrain_limit") else "the 60k training images")
              + f"), fine-tuned {_count(s['epochs'], 'epoch')} on a fixed {s['train_limit']}-image subset "
              f"(Adam, cosine, lr {s['lr']:g}, quantizer lr {s['quant_lr']:g}, seed {s['seed']}). Every "
              "number is over all 10,000 t10k images: *fake-quant* is the trained PyTorch model, *deploy* "
              "the deploy model `srq quantize` reports (`srqcli.deploy`: the exported graph run with "
              "onnxruntime's integer arithmetic), *onnxruntime* the file `srq export` writes (verified at "
              "export unless noted below) at onnxruntime's default optimisation level. Targets: onnxruntime and deploy agree "
              "on 100.00% of the top-1 predictions; deploy within 0.1 point of fake-quant.",
              "", *_provenance(r, command), "",
              "| model | fake-quant top-1 | deploy top-1 | deploy − fake-quant | within 0.1? | onnxruntime "
              "top-1 | ORT vs deploy top-1 agreement | 100%? | bit-identical logits (images) | fake-quant vs "
              "deploy agreement | integer kernels (deploy / ORT) |",
              "|---|---:|---:|---:|:-:|---:|---:|:-:|---:|---:|---|"]
    for name, row in runs.items():
        ov, fd = row["ort_vs_deploy"], row["fake_quant_vs_deploy"]
        ops = ", ".join(f"{k} ×{v}" for k, v in row["integer_ops"].items())
        lines.append(
            f"| {name.upper()} | {row['fake_quant_top1']:.2f} | {row['deploy_top1']:.2f} | "
            f"{row['deploy_minus_fake_quant']:+.2f} | {'yes' if abs(row['deploy_minus_fake_quant']) <= 0.1 else 'no'} | "
            f"{row['ort_top1']:.2f} | {ov['top1_agreement']:.2f}% ({ov['differing_images']} differ) | "
            f"{'yes' if ov['differing_images'] == 0 else 'no'} | {ov['identical_logit_images']:.2f}% | "
            f"{fd['top1_agreement']:.2f}% ({fd['differing_images']} differ) | {row['deploy_fused_layers']} / {ops} |")
    for name, row in runs.items():
        if "export_refused" in row:
            lines += ["", f"**{name.upper()}: `srq export` refused the file** ({row['export_refused']}); "
                      "the onnxruntime numbers are from the same export written with `--no-verify`. "
                      "Since then export gates the default level against the deploy model (exact) and only "
                      "reports its agreement with the trained model, so this file is no longer refused."]
    lines += ["", "Time and load (context only):", ""]
    for name, row in runs.items():
        q = row["srq_quantize_reported"]
        load = row["load_average"]
        lines.append(f"- {name.upper()}: `srq quantize` {q['seconds']:.0f} s (epochs "
                     f"{', '.join(f'{t:.0f}' for t in q['epoch_seconds'])} s; it reported top-1 {q['top1']:.2f} "
                     f"and deployed {q['deployed_top1']:.2f}); evaluation of the 10k images: fake-quant "
                     f"{row['seconds_fake_quant']:.0f} s, deploy model {row['seconds_deploy']:.0f} s, onnxruntime "
                     f"{row['seconds_ort']:.0f} s; load average (1 min) {load['before'][0]:.2f} before, "
                     f"{load['after'][0]:.2f} after")
    lines.append("")
    return lines


def data_loading_section() -> list[str]:
    lines = ["## Data loading vs the training step (CPU)", ""]
    found = sorted(RESULTS.glob("data_loading_*.json"))
    if not found:
        return lines + ["_not run yet_: `python -m benchmarks.data_loading`", ""]
    for path in found:
        r = json.loads(path.read_text())
        train = r["training_images_per_s"]
        lines += [f"{r['arch']} W{r['bits']}A{r['bits']}, batch {r['batch']}, input "
                  f"{'×'.join(map(str, r['input']))} PNG ImageFolder ({r['images_per_class']} images per "
                  f"class) on {r['device']}. Training: float {train['float']:,.0f} img/s, SRQ "
                  f"{train['srq']:,.0f} img/s. A ratio above 1 means loading outruns training.", "",
                  *_provenance(r), "",
                  "| loader workers | loading img/s | ÷ float training | ÷ SRQ training |",
                  "|---:|---:|---:|---:|"]
        for workers, ips in r["loading_images_per_s"].items():
            ratio = r["loading_to_training_ratio"][workers]
            lines.append(f"| {workers} | {ips:,.0f} | {ratio['float']:.1f}× | {ratio['srq']:.1f}× |")
        lines.append("")
    return lines


def startup_section() -> list[str]:
    lines = ["## CLI start-up time", ""]
    r = _load("startup")
    if r is None:
        return lines + ["_not run yet_: `python -m benchmarks.startup`", ""]
    lines += [f"Wall time of each command in a fresh Python process, all commands alternating over "
              f"{r['rounds']} rounds after one warm-up round; median, with the fastest and slowest "
              "round. `import torch` is what the lazy CLI avoids; `pass` is the interpreter's own "
              "start-up.", "", *_provenance(r), "", _load_text(r["load_average"]), "",
              "| command | median (s) | min–max (s) | target |", "|---|---:|---:|---|"]
    for name, median in r["median_s"].items():
        low, high = r["min_max_s"][name]
        target = r["target_s"].get(name)
        met = f"< {target:g} s: {'met' if median < target else 'missed'}" if target else "—"
        lines.append(f"| `{name}` | {median:.2f} | {low:.2f}–{high:.2f} | {met} |")
    return lines + [""]


SEARCH_ARMS = {
    "learned": "(a) learned allocation, searched weights fine-tuned",
    "uniform": "(b) uniform bits within the budget",
    "learned-from-float": "(c) learned allocation, trained from the float start",
    "sensitivity": "(d) sensitivity allocation (Fisher + knapsack)",
}


def _search_table(runs: dict[str, Any]) -> list[str]:
    lines = ["| budget (avg weight bits) | arm | top-1 % | avg weight bits | seeds |",
             "|---:|---|---:|---:|---:|"]
    budgets = sorted({k.split("/")[0] for k in runs}, key=lambda b: -float(b[1:]))
    for b in budgets:
        for arm, title in SEARCH_ARMS.items():
            rows = [v for k, v in runs.items() if k.startswith(f"{b}/") and k.endswith(f"/{arm}")]
            if rows:
                bits = statistics.mean(v["avg_weight_bits"] for v in rows)
                lines.append(f"| {b[1:]} | {title} | {_mean_sd([v['top1'] for v in rows])} | "
                             f"{bits:.3f} | {len(rows)} |")
    return lines + [""]


def search_section() -> list[str]:
    lines = ["## Learned bit-widths: Fashion-MNIST ResNet-20, weights searched, activations fixed", ""]
    r = _load("search_bits")
    cmd = "python -m benchmarks.search_bits --budgets 3.0 2.5 --seeds 0 1 2"
    if r is None:
        return lines + [f"_not run yet_: `{cmd}`", ""]
    s, runs = r["settings"], r["runs"]
    total = s["search_epochs"] + s["finetune_epochs"]
    lines += [f"From the float ResNet-20 of the accuracy benchmark; every arm trains {total} epochs in "
              f"all on a fixed {s['train_limit']}-image subset (the search {s['search_epochs']} + "
              f"fine-tuning {s['finetune_epochs']} for (a)); weights {s['min_bits']}–{s['max_bits']} "
              f"bits, activations {s['act_bits']} bits, all layers searched (none pinned), no "
              f"DropBits; Adam, cosine, lr {s['lr']:g}, quantizer lr {s['quant_lr']:g}. Top-1 on the "
              "held-out t10k split, mean ± std over seeds. (b) at 2.5 bits is uniform 2-bit (no "
              "uniform allocation has 2.5 bits). The search's gates: range rings, starting at "
              "P(on) = 0.9.", "",
              *_provenance(r), "", *_search_table(runs)]
    for path in sorted(RESULTS.glob("search_bits_*.json")):
        v = json.loads(path.read_text())
        changed = {**{k: x for k, x in v["settings"].items() if s.get(k) != x},
                   **{k: x for k, x in v["variant"].items() if x != {"gate_structure": "top",
                                                                    "gate_init": "0.9"}[k]}}
        variant = ", ".join(f"{k.replace('_', ' ')} {x}" for k, x in changed.items())
        lines += [f"**Variant** `{path.stem}` ({variant}; everything else as above, (b) and (d) "
                  "there).", "", *_provenance(v), "", *_search_table(v["runs"])]
    return lines


def ablation_section() -> list[str]:
    lines = ["## DropBits variants (choosing the default): Fashion-MNIST LeNet-5, all layers", ""]
    r = _load("dropbits_ablation")
    if r is None:
        return lines + ["_not run yet_", ""]
    groups: dict[str, list[float]] = {}
    for key, v in r["runs"].items():
        groups.setdefault(key.rsplit("/s", 1)[0], []).append(v["top1"])
    s = r["settings"]
    start = statistics.mean(v["float_top1"] for v in r["runs"].values())
    subset = f" on a fixed {s['train_limit']}-image subset of the training split" if s.get("train_limit") else ""
    lines += [f"Float LeNet-5 trained {s['pretrain_epochs']} epochs on all 60k training images "
              f"(top-1 {start:.2f}%), then {s['epochs']} fine-tuning "
              f"epochs{subset} per row from that checkpoint; rate annealed to 0 over the last epoch, "
              "BatchNorm re-estimated (50 batches); mean ± std over seeds "
              f"{', '.join(map(str, s['seeds']))}; held-out t10k top-1.", "",
              *_provenance(r), "",
              "| bits / variant / rate | top-1 % | seeds |", "|---|---:|---:|"]
    for g in sorted(groups):
        lines.append(f"| {g} | {_mean_sd(groups[g])} | {len(groups[g])} |")
    lines.append("")
    return lines


def main() -> None:
    lines = ["# Benchmarks", "",
             "Rendered by `python -m benchmarks.render` from `benchmarks/results/*.json`; each "
             "section names the command that produced it. Protocol: `docs/benchmark-protocol.md` "
             "(ratios measured side by side in one run; accuracy on held-out splits only).", ""]
    lines += (step_time_section() + throughput_section() + grid_sections() + accuracy_section()
              + export_section() + deploy_section() + export_latency_section() + search_section() + ablation_section()
              + data_loading_section() + startup_section())
    extra = Path(__file__).parent / "NOTES.md"
    if extra.is_file():
        lines += [extra.read_text().rstrip(), ""]
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
