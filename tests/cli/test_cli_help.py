"""Help texts reach the terminal whole: Rich markup in Typer's help must not eat ``[words]``."""

from __future__ import annotations

import pytest
import typer
from rich.markup import render
from typer.testing import CliRunner

from srqcli.cli import app

runner = CliRunner()


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
