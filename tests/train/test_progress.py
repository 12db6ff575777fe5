"""What the progress display leaves on screen (a terminal) and in a log (not a terminal)."""

from __future__ import annotations

import io
import re

from rich.console import Console

from srqcli.train.progress import Reporter

_TOKENS = re.compile(r"(\x1b\[\??\d*[A-Za-z]|\r|\n)")
BAR = "━"


def final_screen(output: str) -> list[str]:
    """The non-blank lines a terminal shows after ``output``: the cursor controls Rich's live
    display uses (carriage return, erase line, cursor up, show/hide cursor) applied to a
    line buffer, text overwriting from the cursor."""
    screen, row, col = [""], 0, 0
    for token in filter(None, _TOKENS.split(output)):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            if row == len(screen):
                screen.append("")
        elif token.startswith("\x1b["):
            if token.endswith("K"):
                screen[row] = ""
            elif token.endswith("A"):
                row -= int(token[2:-1] or 1)
        else:
            line = screen[row].ljust(col)
            screen[row] = line[:col] + token + line[col + len(token):]
            col += len(token)
    return [line.rstrip() for line in screen if line.strip()]


def run_epochs(console: Console, epochs: int = 2, steps: int = 3) -> Reporter:
    """What a training loop does: a bar per epoch, then the epoch's result line."""
    with Reporter(console) as reporter:
        for epoch in range(1, epochs + 1):
            task = reporter.start(f"srq {epoch}/{epochs}", steps)
            for step in range(1, steps + 1):
                reporter.advance(task, images=64 * step, seconds=0.1 * step, loss=0.5, acc=90.0)
                reporter.progress.refresh()  # draw every step (the live thread may not have yet)
            reporter.finish(task)
            console.print(f"srq epoch {epoch}/{epochs}: train loss 0.5000")
    return reporter


def test_terminal_shows_bars_while_running_and_leaves_only_the_epoch_lines() -> None:
    out = io.StringIO()
    run_epochs(Console(file=out, force_terminal=True, width=100, color_system=None))
    drawn = out.getvalue()
    assert f"srq 1/2      {BAR * 28} 3/3" in drawn  # the full bar was on screen while running
    assert final_screen(drawn) == ["srq epoch 1/2: train loss 0.5000", "srq epoch 2/2: train loss 0.5000"]


def test_finished_bar_is_gone_before_the_epoch_line_is_printed() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    with Reporter(console) as reporter:
        task = reporter.start("srq 1/1", 2)
        for step in (1, 2):
            reporter.advance(task, images=64 * step, seconds=0.1 * step)
        reporter.finish(task)
        assert final_screen(out.getvalue()) == []  # the screen while the run goes on
        assert reporter.progress.tasks == []


def test_log_has_no_bars_and_no_step_lines() -> None:
    out = io.StringIO()
    run_epochs(Console(file=out, width=80))
    assert out.getvalue().splitlines() == ["srq epoch 1/2: train loss 0.5000",
                                           "srq epoch 2/2: train loss 0.5000"]


def test_log_gets_a_line_for_a_task_running_longer_than_the_interval(monkeypatch) -> None:
    monkeypatch.setattr(Reporter, "LOG_EVERY_S", 0.0)  # every step is "minutes later"
    out = io.StringIO()
    run_epochs(Console(file=out, width=80), epochs=1, steps=2)
    assert out.getvalue().splitlines() == [
        "srq 1/1 1/2  loss 0.5000  acc 90.00%  640 img/s",
        "srq 1/1 2/2  loss 0.5000  acc 90.00%  640 img/s",
        "srq epoch 1/1: train loss 0.5000"]


def test_start_note_shows_until_the_first_step_is_done() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    with Reporter(console) as reporter:
        task = reporter.start("srq 1/6", 3, note="compiling the SRQ kernels…")
        reporter.progress.refresh()
        assert "0/3 compiling the SRQ kernels…" in final_screen(out.getvalue())[-1]
        reporter.advance(task, images=0, seconds=0.0, loss=0.5)  # the first step: no rate yet
        reporter.progress.refresh()
        screen = final_screen(out.getvalue())[-1]
        assert "1/3 loss 0.5000" in screen and "compiling" not in screen and "img/s" not in screen
