"""``-h`` is ``--help`` everywhere (issue #15)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from srqcli.cli import app

runner = CliRunner()
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_every_command_is_checked() -> None:
    assert {"quantize", "eval", "export", "report", "recipes", "search-bits"} <= set(COMMANDS)


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)], ids=lambda c: " ".join(c) or "srq")
def test_dash_h_prints_the_help(command: list[str]) -> None:
    short = runner.invoke(app, [*command, "-h"])
    long = runner.invoke(app, [*command, "--help"])
    assert short.exit_code == long.exit_code == 0, short.output
    assert "Usage:" in short.output and short.output == long.output
