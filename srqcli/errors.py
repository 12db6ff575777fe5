"""The one exception type the CLI turns into a one-line error message.

Library code raises :class:`SrqError` for every problem caused by user input (a missing
file, a corrupt checkpoint, bits out of range, ...). The CLI catches it, prints the message on
one line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class SrqError(Exception):
    """A user-facing error: the message must be one line and say what to fix."""
