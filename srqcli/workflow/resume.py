"""Resume checkpoints: when to write them, and writing and reading them safely.

A checkpoint is taken between two training steps (mid-epoch included), so a run killed at any
moment — SIGKILL, a preempted node — loses at most the steps since the last one. What goes in
it is up to each workflow; it holds tensors and plain data only, so ``weights_only`` loading
reads it back without unpickling code.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from srqcli.errors import SrqError
from srqcli.io.atomic import save_torch_atomic
from srqcli.train import distributed


class CheckpointClock:
    """Decides after each training step whether to write a checkpoint.

    Always at the end of an epoch; in between every ``every_steps`` steps and/or every
    ``minutes`` minutes since the last checkpoint (0 turns either off). The time rule reads
    rank 0's clock and every process follows it, so all of them reach the checkpoint together.
    """

    def __init__(self, every_steps: int, minutes: float) -> None:
        self.every_steps = every_steps
        self.seconds = minutes * 60.0
        self._steps = 0
        self._last = time.monotonic()

    def due(self, epoch_done: bool) -> bool:
        self._steps += 1
        due = epoch_done or (self.every_steps > 0 and self._steps >= self.every_steps)
        if not due and self.seconds > 0:
            due = distributed.agree(time.monotonic() - self._last >= self.seconds)
        if due:
            self._steps, self._last = 0, time.monotonic()
        return due


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a kill mid-write leaves the previous checkpoint in place."""
    save_torch_atomic(state, path)


def load_state(path: Path, fmt: str, what: str, keys: Collection[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_state` with ``format == fmt``.

    ``keys`` are the entries the caller reads; a file without one of them (written by another
    srq version, or edited) is refused here with one line rather than a ``KeyError`` later.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any damage: truncated zip, bad pickle opcodes…
        raise SrqError(f"resume checkpoint {path} is damaged ({type(exc).__name__}); "
                       "delete it and start over with --overwrite") from exc
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise SrqError(f"{path} is not an {what} resume checkpoint")
    missing = [k for k in keys if k not in state]
    if missing:
        raise SrqError(f"resume checkpoint {path} is incomplete (no {', '.join(missing)}); "
                       "delete it and start over with --overwrite")
    return state
