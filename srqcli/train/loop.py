"""Training and evaluation loops shared by float pre-training and SRQ fine-tuning.

Kept free of file I/O: the caller passes ``after_step`` to checkpoint, so the loop is the
same for ``srq quantize``, benchmarks and tests. Under torchrun the loops run on every process
with its shard of the data and report metrics summed over all processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from srqcli.config import TrainConfig
from srqcli.errors import SrqError
from srqcli.nn.surgery import project_quantizers_, quantizer_parameters
from srqcli.train import distributed
from srqcli.train.progress import Reporter


@dataclass
class EvalMetrics:
    """Classification metrics on a held-out split."""

    top1: float  # percent
    top5: float  # percent
    loss: float
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "images_per_s": self.images_per_s}


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SrqError("--device cuda was requested but no CUDA GPU is available")
    return torch.device(name)


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch of images on ``device``: asynchronously (the loaders pin memory on CUDA) and, on
    CUDA, channels-last, the layout cuDNN's fastest convolutions (Tensor Cores) use; a conv
    given channels-last input runs channels-last, so the whole network follows without the
    model being converted. On CPU the batch stays as the loader made it."""
    layout = torch.channels_last if device.type == "cuda" and images.dim() == 4 else torch.preserve_format
    return images.to(device, non_blocking=True, memory_format=layout)


def _autocast(device: torch.device, amp: bool):
    """bfloat16 autocast on CUDA when ``amp``; quantizers compute in float32 regardless."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, *, amp: bool = False,
             reporter: Reporter | None = None, label: str = "eval") -> EvalMetrics:
    """Top-1/top-5 accuracy and mean cross-entropy over ``loader`` (all processes' shards).

    ``model`` is the bare module, never the DDP wrapper: shards may differ in length by one
    batch, and a wrapper would wait for a forward the shorter shard never runs.
    """
    was_training = model.training
    model.eval()
    correct1 = correct5 = seen = 0
    loss_sum = 0.0
    start = time.perf_counter()
    task = reporter.start(label, len(loader)) if reporter else None
    for images, labels in loader:
        images, labels = to_device(images, device), labels.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(images)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += int((top[:, 0] == labels).sum())
        correct5 += int((top == labels[:, None]).any(dim=1).sum())
        seen += labels.numel()
        if reporter:
            reporter.advance(task, acc=100.0 * correct1 / seen, images=seen,
                             seconds=time.perf_counter() - start)
    if reporter:
        reporter.finish(task)
    model.train(was_training)
    correct1, correct5, loss_sum, seen = distributed.sum_across([correct1, correct5, loss_sum, seen])
    if seen == 0:
        raise SrqError("the validation split is empty")
    return EvalMetrics(100.0 * correct1 / seen, 100.0 * correct5 / seen, loss_sum / seen, int(seen),
                       time.perf_counter() - start)


def build_optimizer(model: nn.Module, cfg: TrainConfig, lr: float, steps: int
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Optimizer with a separate learning rate for quantizer parameters, and its schedule."""
    qparams = quantizer_parameters(model)
    qids = {id(p) for p in qparams}
    weights = [p for p in model.parameters() if id(p) not in qids and p.requires_grad]
    groups = [{"params": weights, "lr": lr}]
    if qparams:
        groups.append({"params": qparams, "lr": cfg.quant_lr, "weight_decay": 0.0})
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum,
                                                     weight_decay=cfg.weight_decay, nesterov=True)
    else:
        opt = torch.optim.Adam(groups, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "cosine":
        sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1))))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return opt, sched


@dataclass
class EpochRecord:
    """One line of the training history (saved in metrics.json and resume checkpoints)."""

    epoch: int
    train_loss: float
    train_acc: float
    val_top1: float
    val_top5: float
    val_loss: float
    images_per_s: float
    seconds: float
    cluster_fraction: float | None = None  # latent weights near the grid (report.stats); None: float


@dataclass
class EpochProgress:
    """How far an epoch has got: steps done and this process's running sums.

    Saved in mid-epoch checkpoints so a resumed epoch reports the same loss and accuracy as
    an uninterrupted one.
    """

    step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device, *,
                amp: bool, reporter: Reporter | None, label: str,
                before_step: Callable[[float], None] | None = None,
                progress: EpochProgress | None = None,
                after_step: Callable[[EpochProgress], None] | None = None,
                penalty: Callable[[], Tensor] | None = None,
                note: Callable[[], str] | None = None,
                first_step_note: str = ""
                ) -> tuple[float, float, float, float]:
    """One pass over ``loader``; returns (mean task loss, accuracy %, images/s, seconds).

    ``before_step(fraction_of_epoch_done)`` lets the caller anneal schedules (DropBits rate)
    per step; ``after_step(progress)`` lets it checkpoint or update its own state. ``penalty()``
    is added to the task loss for the gradient only (the bit search's budget term), and
    ``note()`` to the progress line; ``first_step_note`` is shown until the first step is done
    (e.g. "compiling…": the first SRQ step of a process compiles its kernels for many seconds).

    Images/s counts the steps after this pass's first: the first carries one-off costs (the
    kernels' compilation, data-loader workers starting) that say nothing about the training
    speed. ``seconds`` is the whole pass. To continue an interrupted epoch, pass its saved
    ``progress`` and a loader that yields only the remaining batches.
    """
    model.train()
    progress = progress or EpochProgress()
    total = len(loader)
    start = time.perf_counter() - progress.seconds
    task = reporter.start(label, total, note=first_step_note) if reporter else None
    warm: tuple[int, float] | None = None  # (images, seconds) after this pass's first step
    if reporter and progress.step:
        reporter.progress.update(task, completed=progress.step)
    for images, labels in loader:
        if before_step:
            before_step(progress.step / max(total, 1))
        images, labels = to_device(images, device), labels.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(images)
            loss = F.cross_entropy(logits.float(), labels)
        objective = loss + penalty().to(loss.device) if penalty else loss
        if not torch.isfinite(objective):
            raise SrqError("training diverged (loss is NaN/inf); lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        scheduler.step()
        project_quantizers_(model)
        progress.step += 1
        progress.loss_sum += float(loss.detach()) * labels.numel()
        progress.correct += int((logits.argmax(1) == labels).sum())
        progress.seen += labels.numel()
        progress.seconds = time.perf_counter() - start
        warm = warm or (progress.seen, progress.seconds)
        if after_step:
            after_step(progress)
        if reporter:
            reporter.advance(task, loss=progress.loss_sum / progress.seen,
                             acc=100.0 * progress.correct / progress.seen,
                             images=progress.seen - warm[0], seconds=progress.seconds - warm[1],
                             note=note() if note else "")
    if reporter:
        reporter.finish(task)
    seconds = time.perf_counter() - start
    steady_images, steady_seconds = (progress.seen - warm[0], progress.seconds - warm[1]) \
        if warm and progress.seen > warm[0] else (progress.seen, seconds)  # one step: the whole pass
    loss_sum, correct, seen, steady_images = distributed.sum_across(
        [progress.loss_sum, progress.correct, progress.seen, steady_images])
    if seen == 0:
        raise SrqError("the training split has fewer samples than one batch")
    return loss_sum / seen, 100.0 * correct / seen, steady_images / steady_seconds, seconds


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, loader: DataLoader, device: torch.device,
                         batches: int, *, amp: bool = False) -> int:
    """Recompute BatchNorm running statistics with the final (DropBits-free) quantizers.

    Statistics gathered while DropBits perturbed the weights do not describe the deployed
    network (the prototype lost up to 50 points at W2A2 without this step, docs/method.md §5).
    Uses a cumulative average over ``batches`` training batches. Returns batches used.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return 0
    saved = [(bn.momentum, bn.training) for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
        bn.train()
    used = 0
    for images, _ in loader:
        if used >= batches:
            break
        with _autocast(device, amp):
            model(to_device(images, device))
        used += 1
    for bn, (momentum, training) in zip(bns, saved):
        bn.momentum = momentum
        bn.train(training)
    distributed.average_batchnorm_(model)  # equal batch counts: the mean over every process's batches
    return used
