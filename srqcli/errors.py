"""The one exception type the CLI turns into a one-line error message.

Library code raises :class:`SrqError` for every problem caused by user input (a missing
file, a corrupt checkpoint, bits out of range, ...). The CLI catches it, prints the message on
one line and exits non-zero; anything else is a bug and keeps its traceback.
"""

import re

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_REASON_MAX_CHARS = 150
# The last traceback line of a worker's error, before its message (torch.utils.data reraise).
_WORKER_MARK = "srqcli.errors.SrqError: "


class SrqError(Exception):
    """A user-facing error: the message must be one line and say what to fix.

    An SrqError raised in a DataLoader worker (e.g. an unreadable image with ``--strict``) is
    re-created in the main process from a message holding the worker's whole traceback;
    only the original line is kept, so the CLI still prints one line.
    """

    def __init__(self, message: str = "") -> None:
        if message.startswith("Caught SrqError") and _WORKER_MARK in message:
            message = message.rstrip().rsplit(_WORKER_MARK, 1)[1]
        super().__init__(message)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in a job that writes a run folder. The message (one line) says what the folder
    holds now and how to go on, which only the job knows: a checkpoint to ``--resume``, a
    previous run kept, or nothing."""


def short_reason(exc: BaseException) -> str:
    """One short line from an exception whose text may be long, multi-line or ANSI-coloured.

    Library errors (torch, safetensors, onnx) are often several lines of internals; srq
    quotes them inside its own one-line messages.
    """
    text = " ".join(_ANSI_ESCAPE.sub("", str(exc)).split()) or type(exc).__name__
    if len(text) > _REASON_MAX_CHARS:
        text = text[: _REASON_MAX_CHARS - 1].rstrip() + "…"
    return text
