"""The Typer application object, shared options and the one-line error handling.

Every user error surfaces as one line on stderr (``error: …``) and exit code 2; progress goes
to stderr and results (tables, JSON) to stdout so they can be piped.
"""

from __future__ import annotations

import functools
import logging
import sys
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


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn :class:`SrqError` into a one-line message and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SrqError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:
            what = str(exc) if isinstance(exc, Interrupted) else "partial outputs were not written"
            err_console.print(f"[bold red]interrupted[/]: {what}", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None

    return wrapper


def job_console(quiet: bool) -> Console:
    """Where a job's progress and notes go: stderr, silent with ``--quiet`` (errors still show)."""
    return Console(stderr=True, soft_wrap=True, quiet=quiet)


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
