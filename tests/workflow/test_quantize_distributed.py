"""torchrun: two CPU processes (gloo) train like one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import quick_recipe

from srqcli.config import to_toml
from srqcli.workflow import rundir

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SRQ_FUSED": "0"}


def _quantize(launcher: list[str], recipe: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [*launcher, "-m", "srqcli", "quantize", "example", "--recipe", str(recipe),
           "--out", str(out)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(to_toml(quick_recipe()))
    single, multi = tmp_path / "single", tmp_path / "multi"
    _quantize([sys.executable], recipe, single)
    done = _quantize([sys.executable, "-m", "torch.distributed.run", "--standalone",
                      "--nproc_per_node=2"], recipe, multi)
    log = done.stdout + done.stderr

    # Calibration: both processes computed the same steps from both processes' batches (srq
    # compares a hash of every quantizer tensor across processes before DDP could mask a
    # difference by broadcasting rank 0's), and only rank 0 reports it.
    assert log.count("quantizers calibrated on the batches of all 2 processes: identical on "
                     "every process") == 1
    assert log.count("srq quantize: lenet5") == 1  # one summary: rank 0's

    # One set of outputs, the same files as a single-process run, no temporary leftovers.
    files = lambda run: sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert files(multi) == files(single)
    assert not [f for f in files(multi) if f.endswith(".tmp")]

    a = json.loads((single / rundir.METRICS).read_text())
    b = json.loads((multi / rundir.METRICS).read_text())
    assert (a["processes"], b["processes"]) == (1, 2)
    assert b["quantized"]["images"] == a["quantized"]["images"]  # every val image counted once
    assert abs(a["quantized"]["top1"] - b["quantized"]["top1"]) <= 1.0
