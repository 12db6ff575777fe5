"""Every "does not fit" error names only flags that the command it comes from has.

The checkpoint check is shared by srq quantize, search-bits and eval, the data check by all
four commands: a hint written for one command (``--arch``) was shown by another without it.
"""

from __future__ import annotations

import re

import pytest
import torch
import typer.main
from typer.testing import CliRunner

from srqcli.cli import app
from srqcli.export.demo import write_quantized_file
from srqcli.models import build_model

runner = CliRunner()
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


def options(command: str) -> set[str]:
    """The flags ``srq COMMAND`` accepts."""
    click_command = typer.main.get_command(app).commands[command]
    return {opt for param in click_command.params for opt in (*param.opts, *param.secondary_opts)}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hints")
    torch.save(build_model("resnet20", 10, 1).state_dict(), folder / "resnet20.pt")
    torch.save(build_model("lenet5", 5, 1).state_dict(), folder / "lenet5-5.pt")
    write_quantized_file(folder / "five.safetensors", num_classes=5)
    return folder


CASES = {
    "quantize-checkpoint": ["quantize", "lenet5", "-c", "{f}/resnet20.pt"],
    "quantize-data": ["quantize", "lenet5", "-c", "{f}/lenet5-5.pt", "--num-classes", "5"],
    "search-checkpoint": ["search-bits", "lenet5", "-c", "{f}/resnet20.pt", "--budget", "avg-bits=3"],
    "search-data": ["search-bits", "lenet5", "-c", "{f}/lenet5-5.pt", "--num-classes", "5",
                    "--budget", "avg-bits=3"],
    "eval-checkpoint": ["eval", "lenet5", "-c", "{f}/resnet20.pt"],
    "eval-data": ["eval", "{f}/five.safetensors"],
    "export-data": ["export", "{f}/five.safetensors"],
}


@pytest.mark.parametrize("case", CASES)
def test_a_does_not_fit_hint_names_flags_of_its_command(files, tmp_path, case):
    args = [a.format(f=files) for a in CASES[case]]
    if args[0] in ("quantize", "search-bits"):
        args += ["--out", str(tmp_path / "run"), "-q"]
    res = runner.invoke(app, [*args, "--data", "example"])
    assert res.exit_code == 2, res.output
    message = res.stderr.strip().splitlines()[-1]
    assert "does not fit" in message or "classes but the data has" in message, message
    named = set(FLAG.findall(message))
    assert named, message  # every hint says what to change
    assert named <= options(args[0]), f"{args[0]} has no {named - options(args[0])}: {message}"
    assert not (tmp_path / "run").exists()
