"""``srq quantize``: load a float model, insert SRQ quantizers, fine-tune, evaluate, save."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from srqcli import __version__
from srqcli.config import QuantConfig, Recipe, check_saved_paths, to_toml, with_absolute_paths
from srqcli.data import DatasetBundle, DataSpec, load_datasets, make_loaders
from srqcli.errors import SrqError
from srqcli.io.atomic import write_text_atomic
from srqcli.io.checkpoint import load_into, read_state_dict
from srqcli.io.quantized import (
    ModelInfo,
    is_quantized_model_file,
    load_model,
    read_model_info,
    save_model,
)
from srqcli.methods.registry import finish_training
from srqcli.methods.schedule import TemperatureSchedule
from srqcli.models import build_model, canonical_arch
from srqcli.models.user import check_user_model, is_import_path
from srqcli.nn.dropbits_schedule import DropBitsSchedule
from srqcli.nn.surgery import (
    LayerBits,
    attach_quantizers,
    float_state_dict,
    is_quantizer_key,
    plan_bits,
    output_sites,
    quantizable_layers,
    quantize_model,
)
from srqcli.preprocessing import CHANNELS, FLAGS, IMAGEFOLDER_ONLY
from srqcli.report import write_report
from srqcli.report.stats import model_cluster_fraction, model_totals
from srqcli.train import distributed
from srqcli.train.loop import (
    EpochProgress,
    EpochRecord,
    EvalMetrics,
    build_optimizer,
    evaluate,
    reestimate_batchnorm,
    resolve_device,
    train_epoch,
)
from srqcli.train.progress import Reporter
from srqcli.workflow import rundir
from srqcli.workflow.deployed import evaluate_deployed
from srqcli.workflow.resume import CheckpointClock, load_state, save_state


@dataclass
class QuantizeResult:
    """What a quantize run produced (also written to ``metrics.json``)."""

    out: Path
    float_metrics: EvalMetrics
    quant_metrics: EvalMetrics
    plan: list[LayerBits]
    history: list[EpochRecord] = field(default_factory=list)
    sizes: dict[str, float] = field(default_factory=dict)
    deployed_metrics: EvalMetrics | None = None  # the exported file's (srqcli.deploy)
    undeployable: str | None = None  # why there is no deploy model


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def data_spec(recipe: Recipe) -> DataSpec:
    """The data the recipe names, prepared as it says. ImageFolder images take the model's input
    channels when the recipe gives none (grayscale for a 1-channel model)."""
    d = recipe.data
    model_channels = recipe.model.in_channels if recipe.model.in_channels in CHANNELS else None
    return DataSpec(source=d.source, batch_size=d.batch_size, workers=d.workers,
                    image_size=d.image_size, resize_size=d.resize_size,
                    train_limit=d.train_limit, val_limit=d.val_limit, strict=d.strict,
                    mean=d.mean, std=d.std, channels=d.channels or model_channels,
                    interpolation=d.interpolation)


def record_preprocessing(recipe: Recipe, data: DatasetBundle) -> None:
    """Write the preprocessing ``data`` was loaded with into ``recipe.data``, defaults included,
    so the saved recipe, the resume state and the model file replay exactly that; refuse the
    ImageFolder-only keys for other data rather than ignore them. ``recipe`` is the run's own copy.
    """
    d, p = recipe.data, data.preprocessing
    if p is None:
        data.refuse_preprocessing([f"{FLAGS[key]} (data.{key})" for key in IMAGEFOLDER_ONLY
                                   if getattr(d, key) is not None])
        return
    for key, value in p.to_dict().items():
        setattr(d, key, value)


def build_float_model(recipe: Recipe, data: DatasetBundle, weights: dict | nn.Module | None
                      ) -> nn.Module:
    """The architecture from the recipe, with the checkpoint's ``weights`` when given."""
    m = recipe.model
    num_classes = m.num_classes or data.num_classes
    in_channels = m.in_channels or data.in_channels
    data.check_fits(num_classes, in_channels, "fix --num-classes or the data folder")
    model = build_model(m.arch, num_classes, in_channels)
    if is_import_path(m.arch):
        check_user_model(m.arch, model, num_classes, in_channels, data.image_size)
    if weights is not None:
        # An srq quantized model file as the start: its float part here; run_quantize keeps
        # its quantizers too (quantized_start_plan).
        load_into(model, float_state_dict(weights) if isinstance(weights, dict) else weights,
                  arch=m.arch)
    return model


def calibration_batches(loader, count: int, device: torch.device):
    for i, (images, _) in enumerate(loader):
        if i >= count:
            break
        yield images.to(device)


class Job:
    """State shared by the steps of one quantize run."""

    def __init__(self, recipe: Recipe, out: Path, console: Console, reporter: Reporter) -> None:
        self.recipe, self.out, self.console, self.reporter = recipe, out, console, reporter
        self.device = distributed.local_device(resolve_device(recipe.train.device))
        self.amp = recipe.train.amp
        seed_everything(recipe.train.seed)
        self.data = load_datasets(data_spec(recipe))
        record_preprocessing(recipe, self.data)
        world = distributed.world_size()
        self.train_loader, self.val_loader = make_loaders(
            self.data, recipe.data.batch_size, recipe.data.workers, recipe.train.seed,
            distributed.rank() if world > 1 else 0, world)
        console.print(f"[dim]data:[/] {self.data.description}")
        if self.data.preprocessing is not None:
            console.print(f"[dim]preprocessing:[/] {self.data.preprocessing.describe()}", highlight=False)
        if world > 1:
            console.print(f"[dim]distributed:[/] {world} processes, global batch "
                          f"{recipe.data.batch_size} = {world} × {self.train_loader.batch_size}")

    def info(self, plan: list[LayerBits], metrics: dict[str, Any] | None = None) -> ModelInfo:
        m = self.recipe.model
        return ModelInfo(arch=m.arch, num_classes=m.num_classes or self.data.num_classes,
                         in_channels=m.in_channels or self.data.in_channels,
                         image_size=self.data.image_size, recipe=self.recipe, plan=plan,
                         mean=self.data.mean, std=self.data.std, metrics=metrics or {},
                         preprocessing=self.data.preprocessing)

    def quantize(self, model: nn.Module, q: QuantConfig, state: dict[str, Any] | None,
                 start_plan: list[LayerBits] | None = None) -> tuple[nn.Module, list[LayerBits]]:
        """Attach quantizers: calibrated on the float model for a fresh run, or rebuilt from a
        saved plan — the resume checkpoint's, or ``start_plan`` of a quantized start checkpoint
        (the caller then loads the saved tensors)."""
        if state is None and start_plan is None:
            batches = calibration_batches(self.train_loader, self.recipe.data.calib_batches, self.device)
            model, plan = quantize_model(model, q, batches, seed=self.recipe.train.seed,
                                         share=distributed.gather_cat)
            if distributed.world_size() > 1:
                digest = distributed.check_identical(quantizer_tensors(model), "calibrated quantizers")
                self.console.print(f"[dim]quantizers calibrated on the batches of all "
                                   f"{distributed.world_size()} processes: identical on every "
                                   f"process (sha256 {digest})[/]")
            if q.output_bits:
                sites = [lb.name for lb in plan if lb.output_bits is not None]
                self.console.print(f"[dim]output quantizers ({q.output_bits} bits) on {len(sites)} layers whose "
                                   f"output no quantizer reads{': ' + ', '.join(sites) if sites else ''}[/]")
            return model, plan
        if state is not None:
            plan = [LayerBits(**p) for p in state["plan"]]
        else:
            plan = start_plan
            _check_start_plan(plan, plan_bits([n for n, _ in quantizable_layers(model)], q),
                              self.recipe.model.checkpoint)
            shape = (2, self.data.in_channels, self.data.image_size, self.data.image_size)
            _check_start_outputs(plan, q.output_bits or None, self.recipe.model.checkpoint,
                                 lambda: bool(output_sites(model, shape)))
        attach_quantizers(model, plan, q)
        return model, plan

    def fit(self, model: nn.Module, epochs: int, lr: float, label: str, *,
            resume_state: dict[str, Any] | None = None, schedule: DropBitsSchedule | None = None,
            anneal: TemperatureSchedule | None = None, checkpoint: Checkpointer | None = None,
            first_step_note: str = "") -> list[EpochRecord]:
        """Train ``epochs`` epochs, continuing mid-epoch from ``resume_state`` when given.

        ``schedule`` and ``anneal`` set the DropBits rate and a baseline's temperature before
        each step. ``checkpoint`` is called between steps when the recipe's checkpoint clock
        says so and after the last step of every epoch, with the progress summed over processes.
        ``first_step_note`` shows on the bar until the first step of this call is done.
        """
        steps_per_epoch = len(self.train_loader)
        optimizer, scheduler = build_optimizer(model, self.recipe.train, lr, epochs * steps_per_epoch)
        trainee = distributed.wrap(model, self.device)
        if self.recipe.train.compile:  # one graph (docs/method-decisions.md); eval stays eager
            trainee = torch.compile(trainee)
        history: list[EpochRecord] = []
        start_epoch, progress = 0, None
        if resume_state is not None:
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["scheduler"])
            history = [EpochRecord(**h) for h in resume_state["history"]]
            start_epoch = resume_state["epoch"]
            saved = EpochProgress(**resume_state["progress"])
            # The saved sums are global: rank 0 carries them, the others start from zero.
            progress = saved if distributed.is_main() else EpochProgress(saved.step, seconds=saved.seconds)
            self.train_loader.sampler.replay(resume_state["sampler_pass"],
                                             saved.step * self.train_loader.batch_size)
        clock = CheckpointClock(self.recipe.train.checkpoint_every, self.recipe.train.checkpoint_minutes)
        for epoch in range(start_epoch, epochs):
            hooks = [s.hook(epoch, epochs) for s in (schedule, anneal) if s]
            hook = (lambda f, hooks=hooks: [h(f) for h in hooks]) if hooks else None

            def after_step(p: EpochProgress, epoch: int = epoch) -> None:
                if checkpoint and clock.due(p.step == steps_per_epoch):
                    loss_sum, correct, seen = distributed.sum_across([p.loss_sum, p.correct, p.seen])
                    checkpoint(epoch, EpochProgress(p.step, loss_sum, int(correct), int(seen), p.seconds),
                               optimizer, scheduler, history)

            loss, acc, ips, secs = train_epoch(
                trainee, self.train_loader, optimizer, scheduler, self.device, amp=self.amp,
                reporter=self.reporter, label=f"{label} {epoch + 1}/{epochs}", before_step=hook,
                progress=progress, after_step=after_step,
                first_step_note=first_step_note if epoch == start_epoch else "")
            progress = None
            distributed.average_batchnorm_(model)
            val = evaluate(model, self.val_loader, self.device, amp=self.amp,
                           reporter=self.reporter, label="  val")
            history.append(EpochRecord(epoch + 1, loss, acc, val.top1, val.top5, val.loss, ips, secs,
                                       model_cluster_fraction(model)))
            self.console.print(f"{label} epoch {epoch + 1}/{epochs}: train loss {loss:.4f}, "
                               f"val top-1 {val.top1:.2f}%, {ips:,.0f} img/s, {secs:.0f} s", highlight=False)
        return history


#: On the bar of a process's first SRQ step, which compiles the SRQ kernels (16–50 s on 2 CPU
#: cores; without the note the bar sits at 0 steps with no reason given).
COMPILE_NOTE = "compiling the SRQ kernels…"
#: ``checkpoint(epoch, progress, optimizer, scheduler, history)`` writes the resume state.
Checkpointer = Callable[[int, EpochProgress, torch.optim.Optimizer,
                         torch.optim.lr_scheduler.LRScheduler, list[EpochRecord]], None]
RESUME_FORMAT = "srq.resume"
#: Which training a resume checkpoint belongs to: pre-training the float model (no
#: ``--checkpoint``) or the quantized fine-tuning. Older checkpoints have no phase: ``srq``.
FLOAT_PHASE, SRQ_PHASE = "float", "srq"
#: What a resumed run reads from its checkpoint (see :func:`_save_resume`).
RESUME_KEYS = ("epoch", "progress", "model", "optimizer", "scheduler", "history", "plan",
               "torch_rng", "sampler_pass", "dropbits_rng", "recipe")


def quantizer_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every quantizer parameter and buffer (steps, σ, signedness), in state_dict order."""
    return [v for k, v in model.state_dict().items() if is_quantizer_key(k)]


def _save_resume(path: Path, model: nn.Module, optimizer, scheduler, epoch: int,
                 progress: EpochProgress, history: list[EpochRecord], plan: list[LayerBits],
                 job: Job, schedule: DropBitsSchedule | None, phase: str = SRQ_PHASE) -> None:
    """Everything a resumed run needs to continue bit-identically after ``progress.step``
    steps of ``epoch`` (0-based). The data position is the sampler's pass state plus the
    step: the resumed run redraws the same order and skips the batches already trained on.
    ``loader_rng`` (the generator after the pass's draws) lets a run killed between the end
    of pre-training and its first SRQ checkpoint continue with the random stream it had."""
    save_state(path, {
        "format": RESUME_FORMAT, "phase": phase, "epoch": epoch, "progress": asdict(progress),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "history": [asdict(h) for h in history],
        "plan": [asdict(p) for p in plan], "torch_rng": torch.get_rng_state(),
        "sampler_pass": job.train_loader.sampler.pass_state,
        "loader_rng": job.train_loader.generator.get_state(),
        "dropbits_rng": schedule.generator.get_state() if schedule else None,
        "recipe": job.recipe.to_json(),
    })


def read_start_weights(recipe: Recipe, *, trust_pickle: bool, job: str) -> dict | nn.Module | None:
    """The user's float weights, read before anything slow so a bad path fails at once.

    ``None`` means the float model is trained first (``pretrain_epochs``); neither is an error.
    """
    if recipe.model.checkpoint is None and recipe.model.pretrain_epochs <= 0:
        raise SrqError(f"no --checkpoint given: srq {job} a pretrained model; pass --checkpoint "
                       "PATH (or --pretrain-epochs N to train a float model first)")
    if recipe.model.checkpoint is None:
        return None
    return read_state_dict(recipe.model.checkpoint, trust_pickle=trust_pickle)


def quantized_start_plan(recipe: Recipe) -> list[LayerBits] | None:
    """The plan of the start checkpoint when it is an srq *quantized* model file, else ``None``.

    Fine-tuning such a file (``srq search-bits``' ``searched.safetensors``, or an earlier
    ``srq quantize`` run) continues from its learned steps, σ and BatchNorm statistics:
    re-calibrating would measure activation ranges on its float part, whose BatchNorm
    statistics describe the quantized network, and throw the learned steps away.
    """
    path = recipe.model.checkpoint
    if path is None or not is_quantized_model_file(path):
        return None
    info = read_model_info(path)
    if info.arch != canonical_arch(recipe.model.arch):
        raise SrqError(f"{path} is a quantized {info.arch}, not a {recipe.model.arch}")
    if info.recipe.quant.method != recipe.quant.method:
        raise SrqError(f"{path} was quantized with --method {info.recipe.quant.method}; continue "
                       f"with the same method or start from a float checkpoint")
    return info.plan


def _load_quantized_start(model: nn.Module, tensors: dict[str, torch.Tensor], path: str) -> None:
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise SrqError(f"{path} does not fit this recipe's quantizers (per-channel or method "
                       "settings differ from the run that wrote it)") from exc


def _check_start_plan(saved: list[LayerBits], requested: list[LayerBits], path: str | None) -> None:
    have = {p.name: (p.weight_bits, p.act_bits) for p in saved}
    want = {p.name: (p.weight_bits, p.act_bits) for p in requested}
    if have == want:
        return
    name = next((n for n in want if have.get(n) != want[n]), None) or next(n for n in have if n not in want)

    def show(bits: tuple[int, int] | None) -> str:
        return f"W{bits[0]}A{bits[1]}" if bits else "float"

    raise SrqError(f"{path} is quantized with other bits ({name}: {show(have.get(name))} in the file, "
                   f"{show(want.get(name))} asked); pass the bit config it was made with (e.g. "
                   "--bit-config OUT/bits.toml) or start from a float checkpoint")


def _check_start_outputs(saved: list[LayerBits], output_bits: int | None, path: str | None,
                         has_sites: Callable[[], bool]) -> None:
    """A quantized start file keeps its output quantizers (``--output-bits``): ask for the same.

    A file without any fits every ``--output-bits`` when the model has no output to quantize
    (``has_sites``: e.g. LeNet-5, whose every layer output feeds the next layer's quantizer)."""
    have = {p.output_bits for p in saved if p.output_bits is not None}
    if have == ({output_bits} if output_bits is not None else set()):
        return
    if not have and not has_sites():
        return
    made = f"--output-bits {have.pop()}" if have else "--output-bits 0"
    raise SrqError(f"{path} was quantized with {made}; pass the same or start from a float checkpoint")


def float_start(job: Job, model: nn.Module, resume_state: dict[str, Any] | None = None
                ) -> tuple[nn.Module, EvalMetrics]:
    """The float model to quantize (pre-trained here when no checkpoint) and its accuracy.

    ``resume_state`` is a pre-training checkpoint (``phase`` float) of a killed run.
    """
    if job.recipe.model.checkpoint is None:
        model = pretrain_float(job, model, resume_state)
    metrics = evaluate(model, job.val_loader, job.device, amp=job.amp, reporter=job.reporter,
                       label="float eval")
    job.console.print(f"float model: top-1 {metrics.top1:.2f}%")
    return model, metrics


def pretrain_float(job: Job, model: nn.Module, resume_state: dict[str, Any] | None = None
                   ) -> nn.Module:
    """Train the float model first (the built-in example and benchmarks start from scratch).

    Checkpointed like the SRQ training (``phase`` float), so a run killed while pre-training
    resumes there; a resumed run whose pre-training had finished reuses the float start.
    """
    path = job.out / rundir.FLOAT
    # A resumed run reuses the float start written before (read on rank 0, sent to all).
    saved = distributed.on_main(lambda: load_model(path)[0].state_dict() if path.is_file() else None)
    if saved is not None:
        model.load_state_dict(saved)
        if resume_state is not None:  # killed after pre-training, before the first SRQ checkpoint
            torch.set_rng_state(resume_state["torch_rng"])
            job.train_loader.generator.set_state(resume_state["loader_rng"])
        return model
    m = job.recipe.model
    if resume_state is None:
        job.console.print(f"[bold]Training the float {m.arch}[/] for {m.pretrain_epochs} epochs "
                          "(no --checkpoint given)")
    else:
        model.load_state_dict(resume_state["model"])
        torch.set_rng_state(resume_state["torch_rng"])

    def checkpoint(epoch, progress, optimizer, scheduler, history):
        distributed.on_main(lambda: _save_resume(job.out / rundir.RESUME, model, optimizer, scheduler,
                                                 epoch, progress, history, [], job, None, FLOAT_PHASE))

    job.fit(model, m.pretrain_epochs, m.pretrain_lr, "float", resume_state=resume_state,
            checkpoint=checkpoint)
    distributed.on_main(lambda: save_model(path, model, job.info([])))
    return model


def run_quantize(recipe: Recipe, out: Path, *, resume: bool = False, overwrite: bool = False,
                 trust_pickle: bool = False, console: Console | None = None,
                 show_progress: bool = True) -> QuantizeResult:
    """Quantize the recipe's model with SRQ (+ DropBits) and write a run directory.

    Under torchrun every process trains on its shard; rank 0 alone writes and reports.
    """
    console = console or Console(stderr=True)
    with distributed.session(distributed.local_device(resolve_device(recipe.train.device))):
        if not distributed.is_main():
            console, show_progress = Console(stderr=True, quiet=True), False
        with rundir.claimed(out, resume=resume, overwrite=overwrite,
                            start=recipe.model.checkpoint):
            return _run(recipe, out, resume, trust_pickle, console, show_progress)


#: Recipe keys that hold a path: the same file may be named relative or absolute.
PATH_KEYS = ("model.checkpoint", "data.source")


def check_resume(out: Path, requested: Recipe, flags: Mapping[str, str]) -> str | None:
    """Before ``--resume``: refuse flags that contradict the run's saved recipe, and say when
    there is nothing left to do.

    A resumed run continues with the recipe saved in its checkpoint, so a flag that differs
    from it would be silently ignored. ``flags`` maps each recipe key the user set to the flag
    that set it. ``--epochs`` cannot lengthen a run either: its cosine learning rate, DropBits
    rate and temperature schedules span the run's epochs, so continuing past them would not
    be the run a fresh ``--epochs N`` gives. Returns the line to print for a finished run (its
    outputs are written: resuming would only evaluate and rewrite them), else None. A missing
    checkpoint is left to :func:`run_quantize`'s own error.
    """
    from srqcli.config import recipe_from_dict

    path = out / rundir.RESUME
    if not path.is_file():
        return None
    state = load_state(path, RESUME_FORMAT, "srq", ("recipe",))
    saved = recipe_from_dict(json.loads(state["recipe"]))
    differ: dict[str, str] = {}
    for key, flag in flags.items():
        mine, theirs = _recipe_value(requested, key), _recipe_value(saved, key)
        if not _same_setting(key, mine, theirs):
            differ.setdefault(flag, f"{flag} {_shown(mine)} (the run's: {_shown(theirs)})")
    if differ:
        epochs = (f"; --epochs cannot lengthen a run (its learning-rate and DropBits schedules span its "
                  f"{saved.train.epochs} epochs): to train more, fine-tune its model.safetensors in a new run "
                  "with -c" if "--epochs" in differ else "")
        raise SrqError(f"--resume continues {out} with the settings it was started with, and "
                       f"{', '.join(differ.values())} differ: drop them, or start a new run with "
                       f"another --out{epochs}")
    if state.get("phase", SRQ_PHASE) == SRQ_PHASE and (out / rundir.METRICS).is_file():
        return (f"{out} is finished ({saved.train.epochs} epochs; {rundir.MODEL} written): nothing to "
                f"resume; srq eval {out} evaluates it")
    return None


def warn_if_short_of_space(console: Console, out: Path, model: nn.Module, *, float_copy: bool) -> None:
    """Warn at the start of a job whose outputs may not fit on ``out``'s file system."""
    need = rundir.expected_bytes(sum(p.numel() for p in model.parameters()), float_copy=float_copy)
    warning = rundir.space_warning(out, need)
    if warning:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def _recipe_value(recipe: Recipe, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(recipe, section), name)


def _same_setting(key: str, a: Any, b: Any) -> bool:
    """Equal, or the same file named two ways (relative to here, or resolved when saved)."""
    if a == b:
        return True
    if key in PATH_KEYS and isinstance(a, str) and isinstance(b, str):
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return False


def _shown(value: Any) -> str:
    return "none" if value is None else str(value)



def snap_and_evaluate(job: Job, model: nn.Module, plan: list[LayerBits], metrics: EvalMetrics
                      ) -> tuple[dict[str, Any] | None, EvalMetrics]:
    """Snap the trained model's biases onto its export's int32 grid (:mod:`srqcli.deploy.snap`)
    and evaluate it again; returns what was done with the accuracy before (``metrics``, for
    metrics.json), or ``None`` and ``metrics`` unchanged for a model srq cannot export.

    Every process snaps its own copy: the parameters are identical, and so is the snap.
    """
    from srqcli.deploy.snap import snap_biases  # onnx: imported when needed
    from srqcli.export.workflow import input_shape

    snap = snap_biases(model, input_shape(job.info(plan)))
    if snap is None:
        return None, metrics
    job.console.print(f"[dim]{snap.describe()}[/]", highlight=False)
    after = evaluate(model, job.val_loader, job.device, amp=job.amp, reporter=job.reporter, label="srq eval")
    return {**metrics.to_dict(), "snap": snap.to_dict()}, after


def _run(recipe: Recipe, out: Path, resume: bool, trust_pickle: bool, console: Console,
         show_progress: bool) -> QuantizeResult:
    state = None
    if resume:
        state = distributed.on_main(
            lambda: load_state(out / rundir.RESUME, RESUME_FORMAT, "srq", RESUME_KEYS))
        from srqcli.config import recipe_from_dict

        recipe = recipe_from_dict(json.loads(state["recipe"]))
        what = "float pre-training" if state.get("phase") == FLOAT_PHASE else "srq training"
        console.print(f"[dim]resuming {out}: {what} at epoch {state['epoch'] + 1}, step "
                      f"{state['progress']['step']}, with its saved recipe[/]")
        check_saved_paths(recipe, out / rundir.RESUME, fix="put it back to resume")  # flags cannot change it
    recipe = with_absolute_paths(recipe)  # the saved recipe works from any directory
    started = time.perf_counter()
    weights = read_start_weights(recipe, trust_pickle=trust_pickle, job="quantizes")
    with Reporter(console, enabled=show_progress) as reporter:
        job = Job(recipe, out, console, reporter)
        model = build_float_model(recipe, job.data, weights).to(job.device)
        distributed.on_main(lambda: warn_if_short_of_space(console, out, model, float_copy=weights is None))
        distributed.on_main(lambda: write_text_atomic(out / rundir.RECIPE, to_toml(recipe)))
        # A pre-training checkpoint continues the float training; an SRQ one, the quantized.
        float_state = state if state is not None and state.get("phase") == FLOAT_PHASE else None
        state = None if float_state is not None else state
        model, float_metrics = float_start(job, model, float_state)

        start_plan = quantized_start_plan(recipe) if state is None else None
        model, plan = job.quantize(model, recipe.quant, state, start_plan)
        if start_plan is not None:
            _load_quantized_start(model, weights, recipe.model.checkpoint)
            started_at = evaluate(model.to(job.device), job.val_loader, job.device, amp=job.amp,
                                  reporter=reporter, label="start eval")
            console.print(f"quantized start (steps and BatchNorm kept): top-1 {started_at.top1:.2f}%")
        if state is not None:
            model.load_state_dict(state["model"])
            torch.set_rng_state(state["torch_rng"])
        model.to(job.device)
        # A compiled model cannot draw from the DropBits generator: the schedule draws ahead.
        schedule = DropBitsSchedule.attach(model, recipe.dropbits, recipe.train.seed,
                                           draw_ahead=recipe.train.compile)
        if schedule and state is not None and state["dropbits_rng"] is not None:
            schedule.generator.set_state(state["dropbits_rng"])

        def checkpoint(epoch, progress, optimizer, scheduler, history):
            distributed.on_main(lambda: _save_resume(out / rundir.RESUME, model, optimizer, scheduler,
                                                     epoch, progress, history, plan, job, schedule))

        history = job.fit(model, recipe.train.epochs, recipe.train.lr, recipe.quant.method,
                          resume_state=state, schedule=schedule,
                          anneal=TemperatureSchedule.attach(model, recipe.quant), checkpoint=checkpoint,
                          first_step_note=COMPILE_NOTE if recipe.quant.method == "srq" else "")
        recalibrate = finish_training(model)  # SLB's argmax weights, RQ's mode: BatchNorm must follow
        if schedule or recalibrate:
            if schedule:
                schedule.disable()
            used = reestimate_batchnorm(model, job.train_loader, job.device,
                                        recipe.dropbits.bn_reestimate_batches, amp=job.amp)
            if used:
                why = "with DropBits off" if schedule else f"for the deployed {recipe.quant.method} network"
                console.print(f"[dim]BatchNorm statistics re-estimated on {used} batches {why}[/]")
        quant_metrics = evaluate(model, job.val_loader, job.device, amp=job.amp,
                                 reporter=reporter, label="srq eval")
        before_snap = None
        if recipe.quant.snap_biases:
            before_snap, quant_metrics = snap_and_evaluate(job, model, plan, quant_metrics)
        deployed, undeployable = evaluate_deployed(model, job.info(plan), job.val_loader, reporter)
    sizes = model_totals(model)
    metrics = {
        "srq_version": __version__,
        "float": float_metrics.to_dict(),
        "quantized": quant_metrics.to_dict(),
        "before_bias_snap": before_snap,
        "deployed": deployed.to_dict() if deployed else None,
        "undeployable": undeployable,
        "history": [asdict(h) for h in history],
        "plan": [asdict(p) for p in plan],
        "sizes": sizes,
        "seconds": time.perf_counter() - started,
        "device": str(job.device),
        "processes": distributed.world_size(),
    }

    def write_outputs() -> None:
        save_model(out / rundir.MODEL, model.cpu(),
                   job.info(plan, {"float_top1": float_metrics.top1, "top1": quant_metrics.top1,
                                   "deployed_top1": deployed.top1 if deployed else None}))
        write_text_atomic(out / rundir.METRICS, json.dumps(metrics, indent=2) + "\n")
        write_report(model, out, info=job.info(plan), metrics=metrics, source=str(out / rundir.MODEL))

    distributed.on_main(write_outputs)
    return QuantizeResult(out, float_metrics, quant_metrics, plan, history, sizes, deployed, undeployable)
