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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from srqcli.errors import Interrupted, SrqError
from srqcli.report.writer import CHART_PNG, REPORT_JSON, REPORT_MD
from srqcli.train import distributed

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
# Where ``--overwrite`` keeps the previous run until the new one has a checkpoint (see Claim).
REPLACED = ".srq-replaced"


def prepare(out: Path, *, resume: bool, overwrite: bool) -> Path:
    """Validate and create ``out``; raise :class:`SrqError` with what to do otherwise."""
    if out.exists() and not out.is_dir():
        raise SrqError(f"output path {out} exists and is not a folder")
    if out.is_dir():
        _settle(out)
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


class Claim:
    """One run's hold on ``out``: what a failure must undo, and what the user can do next.

    ``--overwrite`` moves the previous run's outputs aside (:data:`REPLACED`) instead of deleting
    them; they are dropped once the new run has written a resume checkpoint, and moved back if it
    fails before that. So at every moment ``out`` holds a run the user can use: the previous one,
    or the new one through ``--resume``. A run killed outright (SIGKILL) leaves the moved-aside
    run in place, and :func:`prepare` settles it the next time the folder is used.
    """

    def __init__(self, out: Path, *, resume: bool, overwrite: bool, start: str | None = None) -> None:
        self.out = out
        self.created = not out.exists()
        prepare(out, resume=resume, overwrite=overwrite)
        if overwrite and not resume:
            _check_not_replaced(out, start)
            _set_aside(out)

    def finish(self) -> None:
        """The run completed: the previous run it replaced is gone for good."""
        shutil.rmtree(self.out / REPLACED, ignore_errors=True)

    def fail(self) -> str:
        """Undo what the failed run did, unless it left a checkpoint; say what ``out`` holds now.

        Before the first resume checkpoint nothing can be continued, so ``out`` goes back to how
        it was (a previous run restored, a folder the run created removed) rather than keeping
        ``recipe.toml`` and a float start that only make the next attempt need ``--overwrite``.
        """
        checkpointed = (self.out / RESUME).is_file()
        replaced = (self.out / REPLACED).is_dir()
        _settle(self.out)
        if checkpointed:
            return (f"{self.out} keeps the run's last checkpoint: continue it with the same command "
                    "plus --resume")
        if replaced:
            return f"no checkpoint was written yet: {self.out} holds its previous run, unchanged"
        if self.created:
            shutil.rmtree(self.out, ignore_errors=True)
        else:
            clear(self.out)
        return "no checkpoint was written yet, so nothing was kept: run the command again"


@contextmanager
def claimed(out: Path, *, resume: bool, overwrite: bool, start: str | None) -> Iterator[None]:
    """Run the body holding ``out`` (a :class:`Claim`, taken on rank 0); ``start`` is the run's
    ``--checkpoint``.

    On failure the claim is undone as far as it can be; Ctrl-C becomes :class:`Interrupted`
    carrying what ``out`` now holds, so the CLI's closing line is true for this run.
    """
    claim = distributed.on_main(lambda: Claim(out, resume=resume, overwrite=overwrite, start=start))
    try:
        yield
    except BaseException as exc:
        if not distributed.is_main():
            raise
        note = claim.fail()
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Interrupted):
            raise Interrupted(note) from exc
        raise
    if distributed.is_main():
        claim.finish()


def expected_bytes(params: int, *, float_copy: bool) -> int:
    """About what a run of a ``params``-parameter model writes, at most: the float copy (when
    srq trains it), ``model.safetensors``, the resume checkpoint (weights and Adam's two
    moments) twice over, since its atomic replace holds the old and the new file at once, and
    the exports (int8 ONNX codes, the packed file). All float32: an upper bound, not a promise.
    """
    f32 = 4 * params
    return (f32 if float_copy else 0) + f32 + 2 * (3 * f32) + f32 // 2


def space_warning(out: Path, need: int) -> str | None:
    """One line when ``out``'s file system has less free space than ``need`` bytes; None when it
    has enough. Without it a full disk shows only at the first checkpoint, maybe hours in."""
    from srqcli.report.render import size

    free = shutil.disk_usage(out).free
    if free >= need:
        return None
    return (f"{out} has {size(free)} free and this run may write about {size(need)} (float copy, "
            "checkpoints, exports): it may stop at a checkpoint with a full disk; free some space "
            "or choose another --out")


def clear(out: Path) -> None:
    """Remove a run's outputs; other files are left alone."""
    for name in OUTPUTS:
        (out / name).unlink(missing_ok=True)
    remove_stale_temporaries(out)


def _check_not_replaced(out: Path, start: str | None) -> None:
    """Refuse a ``--checkpoint`` that is one of the outputs ``--overwrite`` sets aside: it would
    be gone before the run reads it (e.g. ``-c OUT/float.safetensors --out OUT``)."""
    if start is not None and Path(start).resolve() in {(out / name).resolve() for name in OUTPUTS}:
        raise SrqError(f"--checkpoint {start} is a file of the run that --overwrite replaces; copy "
                       f"it out of {out} first or choose another --out")


def _set_aside(out: Path) -> None:
    """Move the previous run's outputs into ``out/``:data:`REPLACED` (renames: nothing copied)."""
    remove_stale_temporaries(out)
    _move_outputs(out, out / REPLACED)


def _restore(out: Path) -> None:
    """Put the run set aside by :func:`_set_aside` back in place of the unfinished new one."""
    clear(out)
    _move_outputs(out / REPLACED, out)
    shutil.rmtree(out / REPLACED, ignore_errors=True)


def _settle(out: Path) -> None:
    """Finish what a killed ``--overwrite`` left: the new run won if it wrote a checkpoint,
    otherwise the previous run comes back (see :class:`Claim`)."""
    if not (out / REPLACED).is_dir():
        return
    if (out / RESUME).is_file():
        shutil.rmtree(out / REPLACED, ignore_errors=True)
    else:
        _restore(out)


def _move_outputs(source: Path, dest: Path) -> None:
    for name in OUTPUTS:
        if (source / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).replace(dest / name)


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
