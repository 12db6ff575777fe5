"""search-bits under torchrun: two CPU processes agree on one allocation, rank 0 writes it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_search_bits_two_processes(tmp_path):
    out = tmp_path / "search"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "srqcli", "search-bits", "example", "--budget", "avg-bits=3.0",
           "--pretrain-epochs", "1", "--epochs", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SRQ_FUSED": "0"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert log.count("identical on every process") == 1
    assert log.count("srq search-bits: lenet5") == 1
    assert (out / "bits.toml").is_file() and '"processes": 2' in (out / "search.json").read_text()
