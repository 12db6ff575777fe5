"""``srq search-bits``: search each layer's weight bits under a budget, write the allocation.

Run folder (``--out``)::

    OUT/bits.toml             the allocation: srq quantize --bit-config OUT/bits.toml
    OUT/search.json           budget, allocation, costs, history (expected cost, λ per epoch)
    OUT/recipe.toml           the resolved recipe with its [search] table: replay with
                              srq search-bits ARCH --recipe OUT/recipe.toml
    OUT/report.{json,md}, bits.png   bit-allocation report with the budget line
    OUT/checkpoints/last.pt   search state after every epoch (--resume continues from it)
    OUT/float.safetensors     the float start, when srq trained it (--pretrain-epochs)

Strategies: ``learned`` (gates + multiplier, docs/method.md §6) and ``sensitivity`` (Fisher-weighted
quantization error + exact knapsack, no training).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shlex
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from srqcli import __version__
from srqcli.config import (
    LEARNING_RATE,
    QuantConfig,
    Range,
    Recipe,
    check_range,
    check_saved_paths,
    fill_settings,
    recipe_from_dict,
    to_toml,
    with_absolute_paths,
)
from srqcli.core.grid import MAX_BITS, MIN_BITS, portable_weight_bits
from srqcli.errors import SrqError
from srqcli.io.atomic import write_text_atomic
from srqcli.io.quantized import save_model
from srqcli.nn.layers import is_quant_layer
from srqcli.nn.surgery import (
    LayerBits,
    attach_quantizers,
    plan_bits,
    quantizable_layers,
    quantize_model,
)
from srqcli.report import write_report
from srqcli.search.allocation import ALLOCATION_TOML, write_allocation
from srqcli.search.budget import FILL, BudgetSpec, CostModel, check_pins, parse_budget
from srqcli.search.gated import (
    STRUCTURES,
    GatedSRQQuantizer,
    fix_allocation,
    gated_quantizers,
    install_gates,
)
from srqcli.search.readout import Allocation, allocate, readout, repair
from srqcli.search.regularizer import (
    LagrangeMultiplier,
    expected_bits,
    expected_cost,
    start_on_budget_,
)
from srqcli.search.sensitivity import fisher_diagonal, layer_sensitivity
from srqcli.train import distributed
from srqcli.train.loop import (
    EvalMetrics,
    evaluate,
    reestimate_batchnorm,
    resolve_device,
    train_epoch,
)
from srqcli.train.progress import Reporter
from srqcli.workflow import rundir
from srqcli.workflow.quantize import (
    COMPILE_NOTE,
    Job,
    build_float_model,
    calibration_batches,
    float_start,
    read_start_weights,
    warn_if_short_of_space,
)
from srqcli.workflow.resume import load_state, save_state

SEARCH_JSON = rundir.SEARCH_JSON
#: The searched network at the read-out allocation (an srq quantized model file: weights, steps,
#: BatchNorm statistics): ``srq quantize -c OUT/searched.safetensors --bit-config OUT/bits.toml``
#: fine-tunes it with fixed bits, keeping the searched steps; ``srq eval`` evaluates it.
SEARCHED = rundir.SEARCHED
RESUME_FORMAT = "srq.search-resume"
#: What a resumed search reads from its checkpoint (written after every epoch).
RESUME_KEYS = ("epoch", "model", "optimizer", "scheduler", "multiplier", "history", "plan",
               "torch_rng", "loader_rng", "gate_rng", "recipe", "search")
STRATEGIES = ("learned", "sensitivity")


@dataclass
class SearchConfig:
    """Settings of a search (the recipe holds the data, model and training settings)."""

    budget: str = "avg-bits=3.0"
    min_bits: int = 2
    max_bits: int = 4
    act_bits: int | None = None  # None: the recipe's quant.act_bits
    pins: dict[str, int] = field(default_factory=dict)  # layer name/pattern → weight bits
    strategy: str = "learned"
    structure: str = "lsb"  # level structure of the gates (lsb | top; docs/search-bits.md)
    gate_lr: float = 0.02
    #: Initial ``P(z > 0)`` of every gate, or ``"budget"``: the one value at which the expected
    #: cost equals the budget (:func:`~srqcli.search.regularizer.start_on_budget_`).
    gate_init: float | str = 0.9
    lambda_lr: float = 0.1  # dual-ascent step of the multiplier, per training step
    penalty: float = 50.0  # augmented-Lagrangian ρ (damps the dual-ascent oscillation)
    sensitivity_batches: int = 8
    bn_reestimate_batches: int = 20
    knapsack_cells: int = 20000

    def validate(self) -> SearchConfig:
        """Check value ranges and names; raises :class:`SrqError` naming the setting."""
        for key in ("min_bits", "max_bits", "act_bits"):
            v = getattr(self, key)
            if v is not None and not MIN_BITS <= v <= MAX_BITS:
                raise SrqError(f"--{key.replace('_', '-')} must be between {MIN_BITS} and "
                               f"{MAX_BITS}, got {v}")
        if self.min_bits >= self.max_bits:
            raise SrqError(f"--min-bits ({self.min_bits}) must be below --max-bits ({self.max_bits})")
        if self.strategy not in STRATEGIES:
            raise SrqError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.structure not in STRUCTURES:
            raise SrqError(f"gate structure must be one of {', '.join(STRUCTURES)}, got {self.structure!r}")
        if self.gate_init != "budget" and not (isinstance(self.gate_init, (int, float))
                                                and 0.0 < self.gate_init < 1.0):
            raise SrqError(f"gate_init must be in (0, 1) or \"budget\", got {self.gate_init!r}")
        for key, allowed in SEARCH_RANGES.items():
            check_range(f"search.{key}", getattr(self, key), allowed)
        parse_budget(self.budget)
        return self


#: The range of every numeric :class:`SearchConfig` setting but the bits (checked above).
SEARCH_RANGES: dict[str, Range] = {
    "gate_lr": LEARNING_RATE,
    "lambda_lr": Range(0.0),  # in cost units per step: no upper bound fits every budget kind
    "penalty": Range(0.0),
    "sensitivity_batches": Range(1),
    "bn_reestimate_batches": Range(0),  # 0: skip
    "knapsack_cells": Range(1),
}


@dataclass
class SearchResult:
    out: Path
    allocation: Allocation
    plan: list[LayerBits]
    float_metrics: EvalMetrics
    search_metrics: EvalMetrics
    history: list[dict[str, Any]] = field(default_factory=list)
    readout_bits: dict[str, int] = field(default_factory=dict)
    fine_tune: str = ""  # the srq quantize command that fine-tunes the searched network


def fine_tune_command(recipe: Recipe, out: Path) -> str:
    """The ``srq quantize`` command that fine-tunes the searched network with fixed bits, as a
    shell line that works as printed (it needs ``--epochs``' default or the user's own).

    ``recipe`` is the search's own (after ``--resume`` too): the fine-tune must start from the
    searched file, read the same data and use the searched act bits, weight granularity and
    output quantizers, or ``srq quantize`` refuses the quantized start.
    """
    q = recipe.quant
    args = ["srq", "quantize", recipe.model.arch, "-c", str(out / SEARCHED), "--data", recipe.data.source,
            "--bit-config", str(out / ALLOCATION_TOML), "--act-bits", str(q.act_bits),
            "--per-channel" if q.per_channel else "--per-tensor"]
    args += ["--output-bits", str(q.output_bits)]
    return shlex.join([*args, "--out", str(out.with_name(f"{out.name}-tuned"))])


def search_quant_config(recipe: Recipe, cfg: SearchConfig, pins: dict[str, int]) -> QuantConfig:
    """The quantizer settings of the search network: ``max_bits`` weights, pins fixed."""
    act = cfg.act_bits if cfg.act_bits is not None else recipe.quant.act_bits
    return dataclasses.replace(recipe.quant, weight_bits=cfg.max_bits, act_bits=act,
                               first_last_bits=None,
                               layers={n: {"weight_bits": b} for n, b in pins.items()})


def _structural_cost(model: nn.Module, q: QuantConfig, budget: BudgetSpec, input_shape,
                     cfg: SearchConfig, pins: dict[str, int]) -> CostModel:
    """Cost model from the float model (definition order), before any training or calibration."""
    shadow = copy.deepcopy(model).cpu()
    names = [n for n, _ in quantizable_layers(shadow)]
    attach_quantizers(shadow, plan_bits(names, q), q)
    return CostModel.build(shadow, budget, input_shape, cfg.min_bits, cfg.max_bits, pins)


def _build_optimizer(model: nn.Module, recipe: Recipe, cfg: SearchConfig, steps: int):
    gates = [g.gate_logits for _, g in gated_quantizers(model)]
    gate_ids = {id(p) for p in gates}
    from srqcli.nn.surgery import quantizer_parameters

    qparams = [p for p in quantizer_parameters(model) if id(p) not in gate_ids]
    qids = {id(p) for p in qparams} | gate_ids
    weights = [p for p in model.parameters() if id(p) not in qids and p.requires_grad]
    t = recipe.train
    groups = [{"params": weights, "lr": t.lr}, {"params": qparams, "lr": t.quant_lr, "weight_decay": 0.0},
              {"params": gates, "lr": cfg.gate_lr, "weight_decay": 0.0}]
    if t.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum,
                                                     weight_decay=t.weight_decay, nesterov=True)
    else:
        opt = torch.optim.Adam(groups, lr=t.lr, weight_decay=t.weight_decay)

    def cosine(step: int) -> float:
        if t.schedule != "cosine":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, [cosine, cosine, lambda _: 1.0])
    return opt, sched


def run_search(recipe: Recipe, cfg: SearchConfig, out: Path, *, resume: bool = False,
               overwrite: bool = False, trust_pickle: bool = False,
               console: Console | None = None, show_progress: bool = True) -> SearchResult:
    """Search per-layer weight bits under ``cfg.budget`` and write the run folder ``out``.

    Under torchrun every process searches on its shard; rank 0 alone writes and reports.
    """
    console = console or Console(stderr=True)
    if not resume:
        cfg.validate()
    with distributed.session(distributed.local_device(resolve_device(recipe.train.device))):
        if not distributed.is_main():
            console, show_progress = Console(stderr=True, quiet=True), False
        with rundir.claimed(out, resume=resume, overwrite=overwrite,
                            start=recipe.model.checkpoint):
            return _run(recipe, cfg, out, resume, trust_pickle, console, show_progress)


def _run(recipe: Recipe, cfg: SearchConfig, out: Path, resume: bool, trust_pickle: bool,
         console: Console, show_progress: bool) -> SearchResult:
    recipe, cfg = copy.deepcopy(recipe), copy.deepcopy(cfg)
    state = None
    if resume:
        state = distributed.on_main(
            lambda: load_state(out / rundir.RESUME, RESUME_FORMAT, "srq search-bits",
                                 RESUME_KEYS))
        recipe = recipe_from_dict(json.loads(state["recipe"]))
        cfg = SearchConfig(**json.loads(state["search"])).validate()
        console.print(f"[dim]resuming {out} after epoch {state['epoch']} with its saved settings[/]")
        check_saved_paths(recipe, out / rundir.RESUME, fix="put it back to resume")  # flags cannot change it
    recipe = with_absolute_paths(recipe)  # the saved recipe works from any directory
    started = time.perf_counter()
    budget = parse_budget(cfg.budget)
    weights = read_start_weights(recipe, trust_pickle=trust_pickle, job="search-bits starts from")
    with Reporter(console, enabled=show_progress) as reporter:
        job = Job(recipe, out, console, reporter)
        model = build_float_model(recipe, job.data, weights).to(job.device)
        distributed.on_main(lambda: warn_if_short_of_space(console, out, model, float_copy=weights is None))
        input_shape = (job.data.in_channels, job.data.image_size, job.data.image_size)
        names = [n for n, _ in quantizable_layers(model)]
        pins = check_pins(cfg.pins, names)
        q = search_quant_config(recipe, cfg, pins)
        # the bits the pinned layers train with: 8-bit weights on 8-bit inputs are 7-bit
        planned = {lb.name: lb.weight_bits for lb in plan_bits(names, q)}
        pins = {n: planned[n] for n in pins}
        # Fail on an impossible budget before any training.
        _structural_cost(model, q, budget, input_shape, cfg, pins).check_feasible(
            cfg.min_bits, cfg.max_bits, pins)
        recipe.quant = dataclasses.replace(q, layers={})
        distributed.on_main(lambda: write_text_atomic(out / rundir.RECIPE, to_toml(recipe, cfg)))
        model, float_metrics = float_start(job, model)
        if cfg.strategy == "sensitivity":
            model, plan, _cost, alloc, history, ro, metrics = _sensitivity(
                job, model, q, budget, input_shape, cfg, pins)
        else:
            model, plan, _cost, alloc, history, ro, metrics = _learned(
                job, model, q, budget, input_shape, cfg, pins, state)
    final_plan = [dataclasses.replace(lb, weight_bits=portable_weight_bits(alloc.bits[lb.name], lb.act_bits))
                  for lb in plan]
    header = [(f"srq search-bits {__version__}: {recipe.model.arch}, strategy {cfg.strategy}, "
               f"bits {cfg.min_bits}..{cfg.max_bits}"),
              (f"budget {budget.kind} = {budget.value:g}; achieved {alloc.achieved:.6g} "
               f"({alloc.fill:.2%}, {alloc.method})"),
              f"fine-tune: {fine_tune_command(recipe, out)}"]
    for note in alloc.notes:
        console.print(f"[dim]{note}[/]")
    info = job.info(final_plan, {"float_top1": float_metrics.top1, "top1": metrics.top1})
    summary = {
        "srq_version": __version__,
        "strategy": cfg.strategy,
        "search": asdict(cfg),
        "budget": {"kind": budget.kind, "value": budget.value},
        "achieved": alloc.achieved,
        "fill": alloc.fill,
        "allocation_method": alloc.method,
        "in_window": alloc.in_window,
        "notes": alloc.notes,
        "allocation": alloc.bits,
        "readout": ro,
        "pins": pins,
        "float": float_metrics.to_dict(),
        "quantized": metrics.to_dict(),
        "history": history,
        "plan": [asdict(p) for p in final_plan],
        "seconds": time.perf_counter() - started,
        "device": str(job.device),
        "processes": distributed.world_size(),
    }

    def write_outputs() -> None:
        write_allocation(out / ALLOCATION_TOML, final_plan, header)
        write_text_atomic(out / SEARCH_JSON, json.dumps(summary, indent=2) + "\n")
        save_model(out / SEARCHED, model.cpu(), info)
        write_report(model.cpu(), out, info=info, metrics=summary,
                     budget=(budget.kind, budget.value), source=str(out / ALLOCATION_TOML))

    distributed.on_main(write_outputs)
    return SearchResult(out, alloc, final_plan, float_metrics, metrics, history, ro,
                        fine_tune_command(recipe, out))


def _sensitivity(job: Job, model: nn.Module, q: QuantConfig, budget: BudgetSpec, input_shape,
                 cfg: SearchConfig, pins: dict[str, int]):
    """Fisher-weighted quantization error per layer and bits, then the exact knapsack."""
    names = [n for n, _ in quantizable_layers(model) if n not in pins]

    def batches():
        for i, batch in enumerate(job.train_loader):
            if i >= cfg.sensitivity_batches:
                break
            yield batch

    job.console.print(f"[bold]Sensitivity[/] of {len(names)} layers on {cfg.sensitivity_batches} batches")
    fisher = fisher_diagonal(model, names, batches(), job.device)
    distributed.mean_across_(fisher.values())  # every process ranks layers alike
    values = layer_sensitivity(model, fisher, range(cfg.min_bits, cfg.max_bits + 1),
                               per_channel=q.per_channel)
    cost = _structural_cost(model, q, budget, input_shape, cfg, pins)
    alloc = allocate(cost, values, "knapsack", cells=cfg.knapsack_cells)
    qa = dataclasses.replace(q, layers={**q.layers, **{n: {"weight_bits": b} for n, b in alloc.bits.items()}})
    model, plan = quantize_model(
        model, qa, calibration_batches(job.train_loader, job.recipe.data.calib_batches, job.device),
        seed=job.recipe.train.seed, share=distributed.gather_cat)
    cost = CostModel.build(model, budget, input_shape, cfg.min_bits, cfg.max_bits, pins)
    if not cost.fits(alloc.bits) and alloc.in_window:  # execution order changed the plan
        alloc = allocate(cost, values, "knapsack", cells=cfg.knapsack_cells)
        for m_name, m in model.named_modules():
            if is_quant_layer(m) and m.weight_quant.bits != alloc.bits[m_name]:
                m.weight_quant.set_bits(alloc.bits[m_name])
                m.weight_quant.init_step(m.weight)
    metrics = evaluate(model, job.val_loader, job.device, amp=job.amp, reporter=job.reporter,
                       label="ptq eval")
    job.console.print(f"sensitivity allocation ({budget.describe(alloc.achieved)}): "
                      f"top-1 {metrics.top1:.2f}% before fine-tuning")
    history = [{"layer": n, "sensitivity": {str(b): v for b, v in values[n].items()}} for n in names]
    return model, plan, cost, alloc, history, {}, metrics


def _learned(job: Job, model: nn.Module, q: QuantConfig, budget: BudgetSpec, input_shape,
             cfg: SearchConfig, pins: dict[str, int], state: dict[str, Any] | None):
    """Gated blended quantizers + cost regulariser with an adaptive multiplier."""
    recipe = job.recipe
    gate_gen = torch.Generator(device="cpu").manual_seed(recipe.train.seed + 104729)
    model, plan = job.quantize(model, q, state)
    quantizers = install_gates(model, cfg.min_bits, pinned=set(pins), structure=cfg.structure,
                               gate_init=0.5 if cfg.gate_init == "budget" else float(cfg.gate_init),
                               generator=gate_gen)
    model.to(job.device)
    cost = CostModel.build(model, budget, input_shape, cfg.min_bits, cfg.max_bits, pins)
    cost.check_feasible(cfg.min_bits, cfg.max_bits, pins)
    if cfg.gate_init == "budget" and state is None:
        p = start_on_budget_(cost, quantizers)
        job.console.print(f"[dim]gates start at P(on) = {p:.3f}, where E[cost] is the budget[/]")
    mult = LagrangeMultiplier(cfg.lambda_lr, cfg.penalty)
    epochs = recipe.train.epochs
    optimizer, scheduler = _build_optimizer(model, recipe, cfg, epochs * len(job.train_loader))
    history: list[dict[str, Any]] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        mult.load_state_dict(state["multiplier"])
        history = list(json.loads(state["history"]))
        torch.set_rng_state(state["torch_rng"])
        job.train_loader.generator.set_state(state["loader_rng"])
        gate_gen.set_state(state["gate_rng"])
        start = int(state["epoch"])
    trainee = distributed.wrap(model, job.device)
    target = budget.value
    for epoch in range(start, epochs):
        loss, acc, exp_cost = _search_epoch(job, trainee, quantizers, cost, mult, optimizer,
                                            scheduler, f"search {epoch + 1}/{epochs}",
                                            first_step_note=COMPILE_NOTE if epoch == start else "")
        distributed.average_batchnorm_(model)
        val = _readout_eval(job, model, cfg.bn_reestimate_batches)
        ro = readout(quantizers)
        ro_full = {l.name: (l.options[0] if l.pinned else ro[l.name]) for l in cost.layers}
        record = {"epoch": epoch + 1, "train_loss": loss, "train_acc": acc, "val_top1": val.top1,
                  "expected_cost": exp_cost, "readout_cost": cost.achieved(ro_full),
                  "budget": target, "lambda": mult.value,
                  "expected_bits": expected_bits(quantizers), "readout_bits": ro}
        history.append(record)
        job.console.print(f"search epoch {epoch + 1}/{epochs}: loss {loss:.4f}, val top-1 {val.top1:.2f}% (read-out, BN re-estimated), "
                          f"E[cost] {budget.describe(exp_cost)} vs budget {budget.describe()}, "
                          f"λ {mult.value:.3f}")
        distributed.on_main(partial(save_state, job.out / rundir.RESUME, {
            "format": RESUME_FORMAT, "epoch": epoch + 1, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "multiplier": mult.state_dict(), "history": json.dumps(history),
            "plan": [asdict(p) for p in plan], "torch_rng": torch.get_rng_state(),
            "loader_rng": job.train_loader.generator.get_state(), "gate_rng": gate_gen.get_state(),
            "recipe": recipe.to_json(), "search": json.dumps(asdict(cfg)),
        }))
    ro = readout(quantizers)
    alloc = repair(cost, ro, quantizers, cells=cfg.knapsack_cells)
    fix_allocation(model, alloc.bits)
    used = reestimate_batchnorm(model, job.train_loader, job.device, cfg.bn_reestimate_batches,
                                amp=job.amp)
    if used:
        job.console.print(f"[dim]BatchNorm statistics re-estimated on {used} batches at the allocated bits[/]")
    metrics = evaluate(model, job.val_loader, job.device, amp=job.amp, reporter=job.reporter,
                       label="search eval")
    job.console.print(f"searched allocation ({budget.describe(alloc.achieved)}, {alloc.method}): "
                      f"top-1 {metrics.top1:.2f}% before fixed-bit fine-tuning")
    return model, plan, cost, alloc, history, ro, metrics


def _readout_eval(job: Job, model: nn.Module, bn_batches: int) -> EvalMetrics:
    """Validation metrics of the read-out network, with BatchNorm statistics of its own.

    The running statistics gathered while the gates were sampled describe a blend of networks,
    not the read-out one: evaluated with them, a healthy search showed ~10% top-1 per epoch. So
    the statistics are re-estimated at the read-out (as after the search), the network evaluated,
    and the training statistics and the loader's random state put back: the search itself,
    its checkpoints and its resume are the same as without this read-out.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in bn.state_dict().items()} for bn in bns]
    loader_state = job.train_loader.generator.get_state()
    try:
        reestimate_batchnorm(model, job.train_loader, job.device, bn_batches, amp=job.amp)
        return evaluate(model, job.val_loader, job.device, amp=job.amp, reporter=job.reporter,
                        label="  val")
    finally:
        job.train_loader.generator.set_state(loader_state)
        for bn, state in zip(bns, saved):
            bn.load_state_dict(state)


def _search_epoch(job: Job, model: nn.Module, quantizers: dict[str, GatedSRQQuantizer],
                  cost: CostModel, mult: LagrangeMultiplier, optimizer, scheduler, label: str,
                  first_step_note: str = "") -> tuple[float, float, float]:
    """One epoch of the search; returns (mean task loss, accuracy %, final E[cost]).

    The ordinary training step plus the budget term in the loss and, after every step, the
    multiplier's dual-ascent update on the new expected cost.
    """
    target = cost.budget.value
    exp_value = float("nan")

    def update_multiplier(_progress) -> None:
        nonlocal exp_value
        with torch.no_grad():
            exp_value = float(expected_cost(cost, quantizers))
        mult.update(exp_value, target)

    loss, acc, _ips, _secs = train_epoch(
        model, job.train_loader, optimizer, scheduler, job.device, amp=job.amp,
        reporter=job.reporter, label=label,
        penalty=lambda: mult.term(expected_cost(cost, quantizers), target),
        after_step=update_multiplier,
        note=lambda: f"E[cost] {exp_value:.4g}/{target:.4g} λ {mult.value:+.2f}",
        first_step_note=first_step_note)
    return loss, acc, exp_value


__all__ = ["FILL", "SEARCH_JSON", "SearchConfig", "SearchResult", "run_search",
           "search_quant_config"]


def load_search_recipe(name_or_path: str) -> tuple[Recipe, dict[str, Any]]:
    """A recipe file (or built-in name) that may carry a ``[search]`` table.

    The ``[search]`` table holds :class:`SearchConfig` fields (``gate_lr``, ``lambda_lr``,
    ``budget`` …); the rest is an ordinary recipe (validated as ``srq quantize`` does).
    """
    import tomllib

    from srqcli.config import resolve_recipe_path

    path = resolve_recipe_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SrqError(f"recipe {path} is not valid TOML: {exc}") from exc
    search = data.pop("search", {})
    if not isinstance(search, dict):
        raise SrqError(f"recipe {path}: [search] must be a table")
    fill_settings(SearchConfig(), search, "search.")  # unknown keys and wrong types, named
    return recipe_from_dict(data), search
