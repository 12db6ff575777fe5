"""Progress bars for long work (training, evaluation, calibration), rendered with Rich.

The loops only call :class:`Reporter`; with ``enabled=False`` (library use, tests, non-zero
ranks under torchrun) nothing is drawn. On a terminal each task's bar is live while it runs and
removed once it is done: the caller's one-line result (``… epoch 3/6: …``) replaces it, so a
finished run does not end in a wall of full bars. Not on a terminal (a log file, CI) there is
nothing to redraw: a bar would be a line per update, so the log gets only the callers' result
lines, plus a line every :attr:`Reporter.LOG_EVERY_S` seconds for a task still running (a long
ImageNet epoch must still show it is alive).
"""

from __future__ import annotations

import time

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

    LOG_EVERY_S = 300.0  # seconds between the log lines of a running task when not on a terminal

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = console
        self.log_lines = enabled and not console.is_terminal
        self._last_line: dict[TaskID, float] = {}
        self.progress = Progress(
            TextColumn("[bold]{task.description:<12}"),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not enabled or self.log_lines,
        )

    def __enter__(self) -> Reporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, label: str, total: int, note: str = "") -> TaskID:
        """A new bar; ``note`` shows until the first step is done (say why it may take long)."""
        task = self.progress.add_task(label, total=total, stats=note)
        self._last_line[task] = time.monotonic()
        return task

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
        if self.log_lines and time.monotonic() - self._last_line[task] >= self.LOG_EVERY_S:
            self._last_line[task] = time.monotonic()
            t = next(t for t in self.progress.tasks if t.id == task)
            self.console.print(f"{t.description.strip()} {int(t.completed)}/{int(t.total or 0)}  "
                               f"{'  '.join(parts)}", highlight=False)

    def finish(self, task: TaskID | None) -> None:
        """The task is done: its bar goes (the caller prints the result line)."""
        if task is not None:
            self.progress.remove_task(task)
            self.progress.refresh()  # now, so the result line printed next never sits beside the bar
            del self._last_line[task]
