"""Progress bars for long work (training, evaluation, calibration), rendered with Rich.

The loops only call :class:`Reporter`; with ``enabled=False`` (library use, tests, non-zero
ranks under torchrun) nothing is drawn.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


class Reporter:
    """A Rich progress display showing loss, accuracy and images/s per task."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description:<12}"),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not enabled,
        )

    def __enter__(self) -> Reporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, label: str, total: int) -> TaskID:
        return self.progress.add_task(label, total=total, stats="")

    def advance(self, task: TaskID | None, *, images: int, seconds: float,
                loss: float | None = None, acc: float | None = None) -> None:
        if task is None:
            return
        parts = []
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if acc is not None:
            parts.append(f"acc {acc:5.2f}%")
        if seconds > 0:
            parts.append(f"{images / seconds:,.0f} img/s")
        self.progress.update(task, advance=1, stats="  ".join(parts))

    def finish(self, task: TaskID | None) -> None:
        if task is not None:
            self.progress.update(task, completed=self.progress.tasks[task].total)
