"""The cluster-promotion metric recorded after every training epoch (issue #5's ablation)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from srqcli.report.stats import pooled_cluster_fraction


def test_pooled_fraction_weights_layers_by_weights_inside_the_clip_range():
    rows = [SimpleNamespace(params=100, cluster_fraction=1.0, clipped_fraction=0.5),  # 50 inside
            SimpleNamespace(params=150, cluster_fraction=0.0, clipped_fraction=0.0),  # 150 inside
            SimpleNamespace(params=10, cluster_fraction=None, clipped_fraction=1.0)]  # none inside
    assert pooled_cluster_fraction(rows) == pytest.approx(50 / 200)
    assert pooled_cluster_fraction([]) is None


def test_every_epoch_records_it_and_the_last_matches_the_report(example_run):
    history = json.loads((example_run / "metrics.json").read_text())["history"]
    fractions = [h["cluster_fraction"] for h in history]
    assert len(fractions) == len(history) >= 2 and all(0.0 <= f <= 1.0 for f in fractions)
    report = json.loads((example_run / "report.json").read_text())
    assert fractions[-1] == pytest.approx(report["totals"]["cluster_fraction"])
