"""Start-up time of the commands a user types first, next to the cost of importing torch.

``srq --help``, ``srq --version`` and ``srq recipes`` need no model: they must not pay for
importing torch (issue #15 target: ``srq --help`` under 1 s). Each command runs in a fresh
Python process (the only honest start-up measure: a warm process has everything imported),
all commands alternating round after round so machine load hits them alike; one untimed
warm-up round first fills the page cache. ``python -c "import torch"`` is the reference a
lazy CLI avoids, ``python -c pass`` the floor no CLI can beat.

    python -m benchmarks.startup [--rounds 15] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import write_result

ROOT = Path(__file__).parent.parent  # run srqcli from this checkout, whatever is installed

#: name → arguments after ``python``; the srq commands run as ``python -m srqcli`` (what the
#: ``srq`` console script runs, minus the script's own wrapper).
COMMANDS: dict[str, list[str]] = {
    "srq --help": ["-m", "srqcli", "--help"],
    "srq --version": ["-m", "srqcli", "--version"],
    "srq recipes": ["-m", "srqcli", "recipes"],
    "python -c 'import torch'": ["-c", "import torch"],
    "python -c pass": ["-c", "pass"],
}
TARGET_S = {"srq --help": 1.0}


def wall_time(args: list[str]) -> float:
    """Seconds from spawning ``python ARGS`` to its exit (output discarded, must succeed)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def measure(rounds: int) -> dict[str, list[float]]:
    """``rounds`` alternating rounds of every command, after one untimed warm-up round."""
    for args in COMMANDS.values():
        wall_time(args)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(rounds):
        for name, args in COMMANDS.items():
            times[name].append(wall_time(args))
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--quick", action="store_true", help="check that it runs: 2 rounds, no result file")
    args = p.parse_args()
    rounds = 2 if args.quick else args.rounds
    load_before = os.getloadavg()
    times = measure(rounds)
    load_after = os.getloadavg()
    median = {name: statistics.median(t) for name, t in times.items()}
    spread = {name: [min(t), max(t)] for name, t in times.items()}
    for name in COMMANDS:
        target = f"   target < {TARGET_S[name]:g} s: {'met' if median[name] < TARGET_S[name] else 'MISSED'}" \
            if name in TARGET_S else ""
        print(f"{name:<26} median {median[name]:.3f} s  (min {spread[name][0]:.3f}, "
              f"max {spread[name][1]:.3f}){target}")
    print(f"load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    if args.quick:
        return
    write_result("startup", {
        "rounds": rounds, "median_s": median, "min_max_s": spread, "times_s": times,
        "target_s": TARGET_S, "load_average": {"before": list(load_before), "after": list(load_after)}})


if __name__ == "__main__":
    main()
