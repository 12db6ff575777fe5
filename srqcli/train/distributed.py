"""Multi-process training under ``torchrun``: the process group and the few collectives srq needs.

``torchrun --nproc_per_node=N -m srqcli quantize …`` starts N copies of srq with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in the environment; :func:`session`
turns those into a ``torch.distributed`` process group (NCCL on CUDA, gloo on CPU). Without them
(a plain ``srq`` call) nothing is initialised and every helper here is the identity, so single-
process runs take exactly the code path and produce exactly the results they did before.

Conventions the workflows follow: every process computes the same things on its shard of the
data; rank 0 alone reads and writes the run folder (:func:`on_main` hands its result or its
error to the others), prints and draws progress; metrics are sums reduced across processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from srqcli.errors import SrqError

T = TypeVar("T")


def launched() -> bool:
    """Whether this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether a process group is running (then collectives must be called on every rank)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank; torchrun's ``RANK`` also before/after the group exists, so
    the CLI can print its summary on rank 0 only."""
    return dist.get_rank() if active() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` for CUDA under torchrun (one GPU each)."""
    if device.type == "cuda" and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[None]:
    """Initialise the process group from torchrun's environment for the duration of a job.

    A group created by the caller (a library user, a test) is used as is and left running.
    """
    if not launched() or active():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """NCCL only moves CUDA tensors; gloo moves CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` (file-system work) on rank 0 only; every rank gets its result or its error.

    The run folder may exist on rank 0's machine alone (multi-node without shared storage), and
    a user error found there (a non-empty ``--out``, a damaged checkpoint) must end every
    process with the same one-line message instead of leaving the others waiting.
    """
    if not active():
        return fn()
    box: list[object] = [None]
    if is_main():
        try:
            box[0] = ("ok", fn())
        except SrqError as exc:
            box[0] = ("error", str(exc))
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]  # type: ignore[misc]
    if kind == "error":
        raise SrqError(str(value))
    return value  # type: ignore[return-value]


def agree(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (for decisions taken from rank 0's clock)."""
    if not active():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.broadcast(value, src=0)
    return bool(value.item())


def sum_across(values: list[float]) -> list[float]:
    """Element-wise sum over all processes (float64, exact for counts below 2^53)."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def gather_cat(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every process along its last axis, in rank order.

    Used for calibration: each process samples activations (``(n,)`` or ``(channels, n)``) on
    its own batches, and the step search must see all of them so every process computes the
    same steps. ``n`` may differ between processes.
    """
    if not active():
        return x
    dev = _comm_device()
    sizes = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([x.shape[-1]], dtype=torch.int64, device=dev))
    counts = [int(s.item()) for s in sizes]
    padded = torch.zeros((*x.shape[:-1], max(counts)), dtype=x.dtype, device=dev)
    padded[..., : x.shape[-1]] = x.to(dev)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[..., :n] for p, n in zip(parts, counts)], dim=-1).to(x.device)


def mean_across_(tensors: Iterable[Tensor]) -> None:
    """Replace each tensor by its mean over all processes, in place."""
    if not active():
        return
    dev = _comm_device()
    for buf in tensors:
        t = buf.detach().to(dev)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        buf.copy_(t.div_(world_size()))


def average_batchnorm_(model: nn.Module) -> None:
    """Average BatchNorm running statistics over all processes.

    DDP leaves each process with running statistics of its own batches
    (see :func:`wrap`); their mean is the mean over the global batches, and it makes
    evaluation and the saved model use the same statistics on every process.
    """
    mean_across_(buf for bn in model.modules()
                 if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.running_mean is not None
                 for buf in (bn.running_mean, bn.running_var))


# Buffers stay per process during training (BatchNorm statistics are averaged at evaluation);
# torch 2.14 renamed the option, and the old name warns there.
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when a group is running, else itself."""
    if not active():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, **_NO_BUFFER_SYNC)


def fingerprint(tensors: list[Tensor]) -> str:
    """SHA-256 (12 hex digits) of the exact bytes of ``tensors``."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def check_identical(tensors: list[Tensor], what: str) -> str:
    """Verify ``tensors`` are bit-identical on every process; return their fingerprint.

    Called before the DDP wrap, which would otherwise silently copy rank 0's values over a
    disagreement: a mismatch here is a bug in srq, not a user error.
    """
    mine = fingerprint(tensors)
    if active():
        every: list[str | None] = [None] * world_size()
        dist.all_gather_object(every, mine)
        if len(set(every)) != 1:
            raise RuntimeError(f"{what} differ between processes: {every}")
    return mine
