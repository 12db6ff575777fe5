"""Progress bars for long work (training, evaluation, calibration), rendered with Rich.

The loops only call :class:`Reporter`; with ``enabled=False`` (library use, tests, non-zero
ranks under torchrun) nothing is drawn. When the output is not a terminal (a log file, CI)
a live bar would print nothing until the end, so a plain line is logged every 10% instead.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Reporter:
    """A Rich progress display showing loss, accuracy and images/s per task."""

    LOG_EVERY = 0.1  # fraction of a task between log lines when not on a terminal

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = console
        self.log_lines = enabled and not console.is_terminal
        self._logged: dict[TaskID, int] = {}
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
            disable=not enabled or self.log_lines,
        )

    def __enter__(self) -> Reporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, label: str, total: int) -> TaskID:
        return self.progress.add_task(label, total=total, stats="")

    def advance(self, task: TaskID | None, *, images: int, seconds: float,
                loss: float | None = None, acc: float | None = None, note: str = "") -> None:
        """One step done; ``note`` is a caller's extra state (the search's cost vs budget)."""
        if task is None:
            return
        parts = [note] if note else []
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if acc is not None:
            parts.append(f"acc {acc:5.2f}%")
        if seconds > 0:
            parts.append(f"{images / seconds:,.0f} img/s")
        self.progress.update(task, advance=1, stats="  ".join(parts))
        if self.log_lines:
            t = self.progress.tasks[task]
            step = max(1, int((t.total or 1) * self.LOG_EVERY))
            if t.completed - self._logged.get(task, 0) >= step or t.completed == t.total:
                self._logged[task] = int(t.completed)
                self.console.print(f"{t.description.strip()} {int(t.completed)}/{int(t.total or 0)}  "
                                   f"{'  '.join(parts)}", highlight=False)

    def finish(self, task: TaskID | None) -> None:
        if task is not None:
            self.progress.update(task, completed=self.progress.tasks[task].total)
