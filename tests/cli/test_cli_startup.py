"""The commands that need no model start without importing torch & co. (issue #15: importing
torch took 3–6 s of every ``srq --help``). A property of the imports, checked in a fresh
process; the time itself is measured by ``benchmarks/startup.py``, never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import srqcli

HEAVY = ("torch", "torchvision", "onnx", "onnxruntime", "matplotlib", "sklearn")

#: Runs the commands in one fresh interpreter through the real entry module, then reports what
#: they imported (``sys.modules``) and each command's exit code and output.
PROBE = """
import json, sys
from typer.testing import CliRunner
from srqcli.cli import app
results = {' '.join(a): (r.exit_code, r.output) for a in json.loads(sys.argv[1])
           for r in [CliRunner().invoke(app, a)]}
heavy = sorted(m for m in sys.modules if m.split('.')[0] in json.loads(sys.argv[2]))
print(json.dumps({"results": results, "heavy": heavy}))
"""


def probe(commands: list[list[str]]) -> dict:
    """Run ``commands`` in a fresh interpreter importing this checkout's srqcli."""
    root = Path(srqcli.__file__).parent.parent
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(commands), json.dumps(HEAVY)],
                          cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True,
                          text=True, timeout=120, check=True)
    return json.loads(proc.stdout)


@pytest.mark.parametrize("command", [["--help"], ["--version"], ["recipes"], ["quantize", "--help"],
                                     ["search-bits", "--help"], ["eval", "--help"],
                                     ["export", "--help"], ["report", "--help"]])
def test_command_without_a_model_imports_no_heavy_library(command: list[str]) -> None:
    found = probe([command])
    code, output = found["results"][" ".join(command)]
    assert code == 0, output
    assert output.strip()  # the command really ran and printed its help/version/table
    assert found["heavy"] == []
