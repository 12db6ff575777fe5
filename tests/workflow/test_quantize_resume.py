"""Resume: a run interrupted at any step and continued with --resume ends bit-identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import quick_recipe
from safetensors.torch import load_file

from srqcli.config import to_toml
from srqcli.errors import SrqError
from srqcli.workflow import quantize as qmod
from srqcli.workflow import rundir
from srqcli.workflow.quantize import run_quantize

REPO = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 1437 // 64  # the digits example: 1437 training images, batch 64


def assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    a = load_file(str(a_dir / rundir.MODEL))
    b = load_file(str(b_dir / rundir.MODEL))
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different


def history(run: Path) -> list[tuple[float, float, float]]:
    """Per-epoch train loss, train accuracy and val top-1 (not the timings)."""
    metrics = json.loads((run / rundir.METRICS).read_text())
    return [(h["train_loss"], h["train_acc"], h["val_top1"]) for h in metrics["history"]]


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", [("srq", 1, 10), ("float", 2, 10)],
                         ids=["srq-training", "float-pretraining"])
def test_resume_mid_epoch_after_interrupt_is_bit_identical(tmp_path, monkeypatch, eager_srq, crash_at):
    full = tmp_path / "full"
    run_quantize(quick_recipe(train__epochs=2), full, show_progress=False)

    real_save = qmod._save_resume
    saved_steps: list[tuple[str, int, int]] = []

    def save_then_crash(path, model, optimizer, scheduler, epoch, progress, *args):
        real_save(path, model, optimizer, scheduler, epoch, progress, *args)
        phase = args[4] if len(args) > 4 else qmod.SRQ_PHASE
        saved_steps.append((phase, epoch, progress.step))
        if saved_steps[-1] == crash_at:  # killed between steps 10 and 11 of that epoch
            raise KeyboardInterrupt

    monkeypatch.setattr(qmod, "_save_resume", save_then_crash)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        run_quantize(quick_recipe(train__epochs=2, train__checkpoint_every=5), part,
                     show_progress=False)
    every_5 = [5, 10, 15, 20, STEPS_PER_EPOCH]
    float_steps = [("float", e, s) for e in range(4) for s in every_5]  # quick_recipe: 4 epochs
    if crash_at[0] == "srq":
        srq_steps = [("srq", 0, s) for s in every_5] + [("srq", 1, 5), ("srq", 1, 10)]
        assert saved_steps == float_steps + srq_steps
    else:
        assert saved_steps == float_steps[:float_steps.index(crash_at) + 1]
        assert not (part / rundir.FLOAT).exists()  # killed while pre-training
    assert not (part / rundir.MODEL).exists()  # nothing final written by the crashed run
    monkeypatch.setattr(qmod, "_save_resume", real_save)
    run_quantize(quick_recipe(), part, resume=True, show_progress=False)  # the saved recipe wins

    assert_same_weights(full, part)
    assert history(full) == history(part)


def _quantize_cmd(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "srqcli", "quantize", "example", "--recipe", str(recipe),
            "--out", str(out), "--quiet", *extra]


def _env() -> dict[str, str]:
    # Same settings for every process so the uninterrupted and resumed runs compute alike.
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SRQ_FUSED": "0"}


def _wait_for_checkpoint(path: Path, phase: str, proc: subprocess.Popen) -> None:
    """Poll until the run has written a checkpoint of ``phase`` (or has ended)."""
    deadline, seen = time.monotonic() + 120, None
    while proc.poll() is None and time.monotonic() < deadline:
        stamp = path.stat().st_mtime_ns if path.exists() else None
        if stamp is not None and stamp != seen:
            seen = stamp
            if torch.load(path, map_location="cpu", weights_only=True)["phase"] == phase:
                return
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["srq", "float"])
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, phase):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(to_toml(quick_recipe(model__pretrain_epochs=1, train__epochs=2,
                                           train__checkpoint_every=3)))
    full, part = tmp_path / "full", tmp_path / "part"
    subprocess.run(_quantize_cmd(recipe, full), env=_env(), check=True, capture_output=True)

    proc = subprocess.Popen(_quantize_cmd(recipe, part), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = part / rundir.RESUME
    _wait_for_checkpoint(checkpoint, phase, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["phase"] == phase and state["epoch"] == 0
    assert 0 < state["progress"]["step"] < STEPS_PER_EPOCH  # mid-epoch
    assert not (part / rundir.MODEL).exists()

    subprocess.run(_quantize_cmd(recipe, part, "--resume"), env=_env(), check=True,
                   capture_output=True)
    assert_same_weights(full, part)
    assert history(full) == history(part)


def test_resume_rejects_damaged_checkpoint(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"garbage")
    with pytest.raises(SrqError, match="damaged"):
        run_quantize(quick_recipe(), out, resume=True, show_progress=False)


def test_resume_rejects_incomplete_checkpoint(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"format": "srq.resume", "epoch": 0}, out / "checkpoints" / "last.pt")
    with pytest.raises(SrqError, match=r"incomplete \(no progress, model, .*--overwrite") as info:
        run_quantize(quick_recipe(), out, resume=True, show_progress=False)
    assert "\n" not in str(info.value)


def test_checkpoint_settings_are_validated():
    with pytest.raises(SrqError, match="checkpoint_every"):
        quick_recipe(train__checkpoint_every=-1)


def test_resume_names_its_checkpoint_when_the_saved_data_path_is_gone(tmp_path):
    out, gone = tmp_path / "run", tmp_path / "moved-away"
    (out / "checkpoints").mkdir(parents=True)
    state = {key: None for key in qmod.RESUME_KEYS}
    state.update({"format": qmod.RESUME_FORMAT, "epoch": 0, "progress": {"step": 3},
                  "recipe": quick_recipe(data__source=str(gone)).to_json()})
    torch.save(state, out / rundir.RESUME)
    with pytest.raises(SrqError) as info:
        run_quantize(quick_recipe(), out, resume=True, show_progress=False)
    assert str(info.value) == (f"data.source {gone} from the recipe in {out / rundir.RESUME} does not "
                               "exist (moved?); put it back to resume")
