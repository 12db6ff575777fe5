"""Help: ``-h`` is ``--help`` everywhere, and help texts reach the terminal whole (Rich markup
in Typer's help must not eat ``[words]``) (issue #15)."""

from __future__ import annotations

import pytest
import typer
from rich.markup import render
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


def _help_texts() -> list[tuple[str, str]]:
    """(where, text) of every command's docstring and every option's and argument's help."""
    root = typer.main.get_command(app)
    texts = [("srq", root.help or "")]
    for name, command in root.commands.items():
        texts.append((name, command.help or ""))
        texts += [(f"{name} {param.name}", getattr(param, "help", None) or "")
                  for param in command.params]
    return texts


@pytest.mark.parametrize("where,text", _help_texts(), ids=lambda v: str(v)[:40])
def test_help_text_survives_rich_markup(where, text):
    # Rich drops a [word] it takes for a style tag; an escaped \[ prints as [.
    assert render(text).plain == text.replace("\\[", "["), where


def test_search_bits_help_shows_the_search_table():
    res = runner.invoke(app, ["search-bits", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "may hold a [search] table" in res.output
