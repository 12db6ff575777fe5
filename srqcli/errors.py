"""The one exception type the CLI turns into a one-line error message.

Library code raises :class:`SrqError` for every problem caused by user input (a missing
file, a corrupt checkpoint, bits out of range, ...). The CLI catches it, prints the message on
one line and exits non-zero; anything else is a bug and keeps its traceback.
"""

import re

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_REASON_MAX_CHARS = 150


class SrqError(Exception):
    """A user-facing error: the message must be one line and say what to fix."""


def short_reason(exc: BaseException) -> str:
    """One short line from an exception whose text may be long, multi-line or ANSI-coloured.

    Library errors (torch, safetensors, onnx) are often several lines of internals; srq
    quotes them inside its own one-line messages.
    """
    text = " ".join(_ANSI_ESCAPE.sub("", str(exc)).split()) or type(exc).__name__
    if len(text) > _REASON_MAX_CHARS:
        text = text[: _REASON_MAX_CHARS - 1].rstrip() + "…"
    return text
