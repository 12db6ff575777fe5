"""A stopped run says so in one line, like Ctrl-C: SIGTERM (``kill``, a batch scheduler's time
limit) used to end srq silently with exit code 143."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import srqcli

REPO = Path(srqcli.__file__).parent.parent


def test_sigterm_ends_a_run_with_one_line_and_exit_143(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "srqcli", "quantize", "example", "--out", str(tmp_path / "run"),
           "--pretrain-epochs", "100"]  # far longer than the test waits
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SRQ_FUSED": "0"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # wait until the run is training
            if "Training the float" in line:
                break
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    # the run's own note on its folder, as after Ctrl-C (tests/cli/test_cli_overwrite.py)
    assert lines[-1] == "terminated (SIGTERM): no checkpoint was written yet, so nothing was kept: run the command again"
    assert all("terminated" not in line for line in lines[:-1])
