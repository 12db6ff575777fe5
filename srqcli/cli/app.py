"""The Typer application object, shared options and the one-line error handling.

Every user error surfaces as one line on stderr (``error: …``) and exit code 2; progress goes
to stderr and results (tables, JSON) to stdout so they can be piped.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import time
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any

import typer
from rich.console import Console

from srqcli import __version__
from srqcli.errors import Interrupted, SrqError

app = typer.Typer(
    name="srq",
    help="Semi-Relaxed Quantization (SRQ) + DropBits: 2–4-bit quantization of PyTorch vision models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # subcommands inherit it
)
out_console = Console()
err_console = Console(stderr=True, soft_wrap=True)


class DropBitsVariant(str, Enum):
    none = "none"
    top = "top"
    lsb = "lsb"
    mask = "mask"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's time limit, ``docker stop``) as an exception.

    A KeyboardInterrupt, so every clean-up that a Ctrl-C runs (temporary files, a fresh run's
    folder) runs for it too, and no library's ``except Exception`` swallows it.
    """


def raise_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated`: without it Python dies at once, silently, exit 143."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, handler)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn :class:`SrqError` into a one-line message and exit code 2; an interruption (Ctrl-C,
    SIGTERM) into one line and the shell's exit code for that signal (130, 143)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SrqError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:
            # a job's Interrupted says what its run folder holds; its cause is the signal
            terminated = isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated)
            what = str(exc) if isinstance(exc, Interrupted) else "partial outputs were not written"
            err_console.print(f"[bold red]{'terminated (SIGTERM)' if terminated else 'interrupted'}[/]: {what}",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(143 if terminated else 130) from None

    return wrapper


def print_deployed_note(deployed: bool, undeployable: str | None) -> None:
    """What the "deployed" accuracy of ``srq quantize``/``srq eval`` is, or why there is none."""
    if deployed:
        out_console.print("deployed: the ONNX file srq export writes, run with onnxruntime's integer "
                          "arithmetic; its accuracy is what you ship", highlight=False, soft_wrap=True)
    elif undeployable:
        out_console.print(f"deployed: n/a, this model cannot be exported ({undeployable})",
                          highlight=False, soft_wrap=True)


def job_console(quiet: bool) -> Console:
    """Where a job's progress and notes go: stderr, silent with ``--quiet`` (errors still show).

    Not on a terminal (a log file, CI) every line gets a timestamp: a log read later has no
    live display to say when each epoch ended.
    """
    console = Console(stderr=True, soft_wrap=True, quiet=quiet)
    if console.is_terminal:
        return console
    return Console(file=_TimestampedStderr(), soft_wrap=True, quiet=quiet)  # type: ignore[arg-type]


class _TimestampedStderr:
    """A text stream that writes to whatever ``sys.stderr`` is at each write (test runners swap
    it) and starts every line with the date and time."""

    def __init__(self) -> None:
        self._at_line_start = True

    def write(self, text: str) -> int:
        pieces = []
        for line in text.splitlines(keepends=True):
            if self._at_line_start:
                pieces.append(time.strftime("%Y-%m-%d %H:%M:%S "))
            pieces.append(line)
            self._at_line_start = line.endswith("\n")
        sys.stderr.write("".join(pieces))
        return len(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return False


class _StderrHandler(logging.Handler):
    """Plain lines on whatever ``sys.stderr`` is when a record arrives, so Rich's live display
    (which redirects it) and test runners that capture it both see the line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 (logging's own contract: a failed emit never raises)
            self.handleError(record)


def show_library_warnings() -> None:
    """Print srq's library warnings (e.g. a skipped unreadable image, logged from DataLoader
    workers too) on stderr; the library itself only logs, as libraries should."""
    logger = logging.getLogger("srqcli")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler(logging.WARNING))


def _version(value: bool) -> None:
    if value:
        out_console.print(f"srq {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """srq: quantize, evaluate and export low-bit vision models."""
    show_library_warnings()
