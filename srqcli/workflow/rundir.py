"""The run directory: where ``srq quantize`` writes, and how it refuses to clobber.

Layout::

    RUN/model.safetensors       quantized checkpoint (srq.quantized, no pickle)
    RUN/float.safetensors       the float start, when srq trained it (``pretrain_epochs``)
    RUN/recipe.toml             fully resolved recipe: replay with --recipe RUN/recipe.toml
    RUN/metrics.json            float and quantized metrics, history, bits and sizes
    RUN/checkpoints/last.pt     resume state (tensors and plain data only: weights_only loads it)
    RUN/report.{json,md}, bits.png   the bit-allocation report

Checked before any work starts, so a typo in ``--out`` fails in a second, not after training.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from srqcli.errors import SrqError
from srqcli.report.writer import CHART_PNG, REPORT_JSON, REPORT_MD

MODEL = "model.safetensors"
FLOAT = "float.safetensors"
RECIPE = "recipe.toml"
METRICS = "metrics.json"
RESUME = Path("checkpoints") / "last.pt"
REPORT = (REPORT_JSON, REPORT_MD, CHART_PNG)  # written by srqcli.report.write_report
# Written by ``srq search-bits``: the allocation ``srq quantize --bit-config`` reads, the search
# log, and the end-of-search weights as a float state_dict.
ALLOCATION = "bits.toml"
SEARCH_JSON = "search.json"
SEARCHED = "searched.safetensors"
SEARCH = (ALLOCATION, SEARCH_JSON, SEARCHED)
OUTPUTS = (MODEL, FLOAT, RECIPE, METRICS, str(RESUME), *REPORT, *SEARCH)


def prepare(out: Path, *, resume: bool, overwrite: bool) -> Path:
    """Validate and create ``out``; raise :class:`SrqError` with what to do otherwise."""
    if out.exists() and not out.is_dir():
        raise SrqError(f"output path {out} exists and is not a folder")
    if resume:
        if not (out / RESUME).is_file():
            raise SrqError(f"nothing to resume in {out}: {RESUME} not found")
        remove_stale_temporaries(out)
    elif out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SrqError(f"output folder {out} is not empty; pass --overwrite to replace its run "
                       "or --resume to continue it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".srq-write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SrqError(f"output folder {out} is not writable: {exc.strerror or exc}") from exc
    return out


def claim(out: Path, *, resume: bool, overwrite: bool) -> bool:
    """:func:`prepare` ``out``; return whether it did not exist before (see :func:`abandon`)."""
    created = not out.exists()
    prepare(out, resume=resume, overwrite=overwrite)
    return created


def abandon(out: Path, created: bool) -> None:
    """After a failed run: remove ``out`` if the run created it and left nothing to resume.

    What a run writes before its first resume checkpoint (``recipe.toml``, the float start)
    cannot be continued with ``--resume`` and would only make the next attempt need
    ``--overwrite``; once a checkpoint exists, the folder is the way to resume.
    """
    if created and out.is_dir() and not (out / RESUME).is_file():
        shutil.rmtree(out, ignore_errors=True)


def clear(out: Path) -> None:
    """Remove a previous run's outputs (``--overwrite``); other files are left alone."""
    for name in OUTPUTS:
        (out / name).unlink(missing_ok=True)
    remove_stale_temporaries(out)


def remove_stale_temporaries(out: Path) -> None:
    """Delete temporary files a killed run left mid-write (``.NAME.*.tmp``, srqcli.io.atomic).

    The real file next to one is intact (it is only ever replaced by a rename), so the
    temporary is garbage; only names of srq's own outputs are touched.
    """
    for name in OUTPUTS:
        target = out / name
        if target.parent.is_dir():
            for tmp in target.parent.glob(f".{target.name}.*.tmp"):
                tmp.unlink(missing_ok=True)
