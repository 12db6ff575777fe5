"""``srq quantize`` output captured (not a terminal, as in ``srq … 2> log``): one timestamped
line per epoch per phase, no progress bars, no step lines, long lines kept whole."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from srqcli.cli import app

runner = CliRunner()
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} ")
EPOCH = re.compile(r"^(float|srq) epoch (\d+)/(\d+): train loss [\d.]+, val top-1 [\d.]+%, [\d,]+ img/s, \d+ s$")


def test_quantize_log_is_one_timestamped_line_per_epoch_per_phase(tmp_path, eager_srq) -> None:
    out = tmp_path / "a-run-folder-with-a-long-name-so-that-the-closing-line-passes-80-columns"
    res = runner.invoke(app, ["quantize", "example", "--out", str(out), "--pretrain-epochs", "2",
                              "--epochs", "2", "--batch-size", "128"])
    assert res.exit_code == 0, res.output
    log = res.stderr.splitlines()
    assert log and all(STAMP.match(line) for line in log), log
    messages = [STAMP.sub("", line) for line in log]
    epochs = [m.groups() for line in messages if (m := EPOCH.match(line))]
    assert epochs == [("float", "1", "2"), ("float", "2", "2"), ("srq", "1", "2"), ("srq", "2", "2")]
    # Besides the epoch lines, only the run's few notes (data, float start, output quantizers,
    # BatchNorm, bias snap): no line per step or per evaluation, no bar.
    assert len(messages) - len(epochs) <= 6, messages
    assert not any(re.search(r"\b\d+/\d+\s+(loss|acc)", line) for line in messages), messages
    assert not re.search("[━█\r\x1b]", res.stderr)
    saved = [line for line in res.stdout.splitlines() if line.startswith("saved ")]
    assert len(saved) == 1 and len(saved[0]) > 80 and saved[0].endswith("bits.png)")
