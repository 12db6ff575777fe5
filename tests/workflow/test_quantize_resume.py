"""Resume: a run interrupted after an epoch and continued with --resume ends bit-identical."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from conftest import quick_recipe
from srqcli.errors import SrqError
from srqcli.workflow import quantize as qmod
from srqcli.workflow.quantize import run_quantize


@pytest.mark.slow
def test_resume_after_interrupt_is_bit_identical(tmp_path, monkeypatch):
    recipe = quick_recipe(train__epochs=3)
    full = tmp_path / "full"
    run_quantize(recipe, full, show_progress=False)

    real_save = qmod._save_resume
    calls = {"n": 0}

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:  # killed right after the checkpoint of epoch 2
            raise KeyboardInterrupt

    monkeypatch.setattr(qmod, "_save_resume", save_then_crash)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        run_quantize(quick_recipe(train__epochs=3), part, show_progress=False)
    assert not (part / "model.safetensors").exists()  # nothing final written by the crashed run
    monkeypatch.setattr(qmod, "_save_resume", real_save)
    run_quantize(quick_recipe(train__epochs=3), part, resume=True, show_progress=False)

    a = load_file(str(full / "model.safetensors"))
    b = load_file(str(part / "model.safetensors"))
    assert a.keys() == b.keys()
    different = [k for k in a if not (a[k] == b[k]).all()]
    assert not different, different


def test_resume_rejects_damaged_checkpoint(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"garbage")
    with pytest.raises(SrqError, match="damaged"):
        run_quantize(quick_recipe(), out, resume=True, show_progress=False)
