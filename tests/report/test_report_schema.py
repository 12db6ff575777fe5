"""report.json: written atomically, validates, round-trips, refuses bad or unknown schemas."""

from __future__ import annotations

import json

import pytest
from report_testutil import INPUT, quantized_known

from srqcli.config import QuantConfig
from srqcli.errors import SrqError
from srqcli.report import (
    SCHEMA,
    SCHEMA_VERSION,
    BitReport,
    build_report,
    read_report,
    write_report,
)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    model, _ = quantized_known(QuantConfig(weight_bits=3, act_bits=4, per_channel=True, skip=["fc2"]))
    out = tmp_path_factory.mktemp("rep")
    files = write_report(model, out, input_shape=INPUT, metrics={"float_top1": 91.5, "top1": 90.25},
                         budget=("avg_weight_bits", 3.5), source="somewhere/model.safetensors",
                         chart=False)
    return files


def test_json_round_trip(written):
    raw = json.loads(written.json.read_text())
    assert raw["schema"] == SCHEMA and raw["schema_version"] == SCHEMA_VERSION == 1
    assert list(raw)[:2] == ["schema", "schema_version"]
    back = read_report(written.json)
    assert back == written.report
    assert back.to_dict() == raw
    assert read_report(written.json.parent) == back  # a folder means its report.json


def test_json_content(written):
    raw = json.loads(written.json.read_text())
    assert raw["accuracy"] == {"float_top1": 91.5, "quantized_top1": 90.25}
    assert raw["budget"] == {"kind": "avg_weight_bits", "value": 3.5, "achieved": 3.0, "met": True}
    assert raw["source"] == "somewhere/model.safetensors"
    assert raw["model"]["input_shape"] == [1, *INPUT] and raw["model"]["arch"] is None
    per_channel = [layer for layer in raw["layers"] if layer["quantized"]]
    assert all(layer["per_channel"] and len(layer["weight_steps"]) == layer["shape"][0]
               for layer in per_channel)
    assert all(layer["weight_step_min"] == min(layer["weight_steps"]) for layer in per_channel)


def test_no_temporary_files_left(written):
    assert sorted(p.name for p in written.json.parent.iterdir()) == ["report.json", "report.md"]


def test_unknown_keys_are_ignored(written, tmp_path):
    raw = json.loads(written.json.read_text())
    raw["future_field"] = 1
    raw["layers"][0]["another"] = "x"
    path = tmp_path / "report.json"
    path.write_text(json.dumps(raw))
    assert read_report(path) == written.report


def _mutate(raw, change):
    change(raw)
    return raw


BAD = {
    "newer version": (lambda r: r.update(schema_version=2), "schema version 2"),
    "version zero": (lambda r: r.update(schema_version=0), "invalid schema_version"),
    "version string": (lambda r: r.update(schema_version="1"), "invalid schema_version"),
    "version missing": (lambda r: r.pop("schema_version"), "invalid schema_version"),
    "other schema": (lambda r: r.update(schema="onnx.thing"), "not an srq bit report"),
    "missing totals": (lambda r: r.pop("totals"), "totals is missing"),
    "missing layer field": (lambda r: r["layers"][1].pop("macs"), "layers[1].macs is missing"),
    "bits as string": (lambda r: r["layers"][0].update(weight_bits="4"), "layers[0].weight_bits must be an integer"),
    "bool as int": (lambda r: r["layers"][0].update(quantized=1), "layers[0].quantized must be true or false"),
    "null not allowed": (lambda r: r["totals"].update(packed_bytes=None), "totals.packed_bytes"),
    "layers not list": (lambda r: r.update(layers={}), "layers must be a list"),
    "bad budget": (lambda r: r["budget"].update(kind="joules"), "budget.kind must be one of"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_reports_are_one_line_errors(written, tmp_path, case):
    change, message = BAD[case]
    path = tmp_path / "report.json"
    path.write_text(json.dumps(_mutate(json.loads(written.json.read_text()), change)))
    with pytest.raises(SrqError) as exc:
        read_report(path)
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", "null", "\x89PNG"])
def test_not_a_report(tmp_path, content):
    path = tmp_path / "report.json"
    path.write_text(content)
    with pytest.raises(SrqError) as exc:
        read_report(path)
    assert "\n" not in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(SrqError, match="not found"):
        read_report(tmp_path / "nope.json")


def test_nan_free_and_budget_validation():
    model, _ = quantized_known()
    report = build_report(model, budget={"kind": "bops", "value": 1e9})
    assert report.budget.achieved is None and report.budget.met is None  # no input size
    json.loads(report.to_json())  # strict JSON (no NaN)
    for bad in [("watts", 3), ("avg_weight_bits", -1), ("size_mb", float("nan"))]:
        with pytest.raises(SrqError):
            build_report(model, budget=bad)


def test_size_and_bops_budgets():
    model, _ = quantized_known()
    r = build_report(model, input_shape=INPUT, budget=("size_mb", 0.0001))
    assert r.budget.achieved == r.totals.packed_bytes / 1e6 and r.budget.met is False
    r = build_report(model, input_shape=INPUT, budget=("bops", 1e12))
    assert r.budget.achieved == r.totals.bops and r.budget.met is True


def test_accuracy_forms():
    model, _ = quantized_known()
    nested = {"float": {"top1": 80.0, "top5": 99.0}, "quantized": {"top1": 79.0}}
    acc = build_report(model, metrics=nested).accuracy
    assert (acc.float_top1, acc.quantized_top1) == (80.0, 79.0)
    acc = build_report(model, metrics={"top1": 50.0}).accuracy
    assert (acc.float_top1, acc.quantized_top1) == (None, 50.0)
    assert BitReport.from_dict(build_report(model).to_dict()).accuracy.quantized_top1 is None
