"""The ``srq`` command line: a thin Typer layer over :mod:`srqcli.workflow`.

Every user error surfaces as one line on stderr (``error: …``) and exit code 2; progress goes
to stderr and results (tables, JSON) to stdout so they can be piped. Each command lives in its
own module, registered on the shared :data:`app` when imported here.
"""

from srqcli.cli import evaluate, export, quantize, recipes, report  # noqa: F401  (registers the commands)
from srqcli.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()
