"""The ``srq`` command line: a thin Typer layer over :mod:`srqcli.workflow`.

Every user error surfaces as one line on stderr (``error: …``) and exit code 2; progress goes
to stderr and results (tables, JSON) to stdout so they can be piped. Each command lives in its
own module, registered on the shared :data:`app` when imported here.
"""

import logging

from srqcli.cli import evaluate, export, quantize, recipes, report, search  # noqa: F401  (registers the commands)
from srqcli.cli.app import app, raise_on_sigterm


def main() -> None:
    """Console-script entry point."""
    # torch.compile on a CPU-only machine logs "No CUDA runtime is found" at warning level:
    # noise for srq's users, whose device choice srq reports itself.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    raise_on_sigterm()
    app()
