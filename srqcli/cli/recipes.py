"""``srq recipes``."""

from __future__ import annotations

from rich.table import Table

from srqcli.cli.app import app, out_console
from srqcli.config import BUILTIN_RECIPES


@app.command()
def recipes() -> None:
    """List the built-in recipes."""
    table = Table(title="built-in recipes (use with --recipe NAME)")
    table.add_column("name")
    table.add_column("description")
    for path in sorted(BUILTIN_RECIPES.glob("*.toml")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        table.add_row(path.stem, first.lstrip("# ") if first.startswith("#") else "")
    out_console.print(table)
