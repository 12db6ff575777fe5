"""``srq export`` and ``srq eval`` on exported artifacts, end to end through the CLI.

The model is a LeNet-5 trained for a few seconds on the built-in digits data and quantized
(W4A4, no fine-tuning), so accuracies and top-1 agreement are meaningful.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from srqcli.cli import app
from srqcli.config import Recipe
from srqcli.data import DataSpec, load_datasets, make_loaders
from srqcli.export.demo import write_quantized_file
from srqcli.io.quantized import ModelInfo, save_model
from srqcli.models import build_model
from srqcli.report import read_report

runner = CliRunner()


# eager SRQ math (bit-identical to the compiled kernels) on one thread: see tests/conftest.py
pytestmark = pytest.mark.usefixtures("eager_srq")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder holding a trained, quantized LeNet-5 (what srq quantize would leave)."""
    out = tmp_path_factory.mktemp("run")
    bundle = load_datasets(DataSpec(source="example", batch_size=64))
    train, _ = make_loaders(bundle, 64, 0, seed=0)
    torch.manual_seed(0)
    model = build_model("lenet5", 10, 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for x, y in train:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    calib = [x for x, _ in list(train)[:4]]
    write_quantized_file(out / "model.safetensors", "lenet5", model=model, calib=calib)
    return out


def _invoke(*args: str):
    return runner.invoke(app, list(args))


def _one_line_error(result) -> str:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output  # one line; "verifying on …" progress may precede it
    return errors[0]


def _json(result) -> dict:
    """The JSON document in a command's output (stderr, e.g. torch warnings, is mixed in)."""
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_export_onnx_default(run_dir, tmp_path):
    out = tmp_path / "m.onnx"
    res = _invoke("export", str(run_dir), "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    data = _json(res)
    assert data["format"] == "onnx" and data["layout"] == "qdq" and data["opset"] == 19
    assert data["verify"]["ok"] is True
    ops = data["verify"]["executed_op_types"]
    assert ops.get("QLinearConv", 0) >= 2 and ops.get("QGemm", 0) >= 3, ops
    # the artifact and its bit-allocation report, nothing else left behind
    assert _files(tmp_path) == {"m.onnx", "report.json", "report.md", "bits.png"}
    assert data["report"] == str(tmp_path / "report.json")
    report = read_report(tmp_path / "report.json")
    assert report.source == str(out) and [row.weight_bits for row in report.layers] == [4] * 5
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    alloc = json.loads(meta["srq.bit_allocation"])
    assert [entry["weight_bits"] for entry in alloc["layers"]] == [4] * 5
    assert "srq.encodings" not in meta  # per-channel steps would bloat the file (bit_allocation)
    assert meta["srq.version"] and json.loads(meta["srq.recipe"])["quant"]["weight_bits"] == 4
    assert meta["srq.arch"] == "lenet5" and meta["srq.layout"] == "qdq"


def test_export_with_data_and_eval_onnx(run_dir, tmp_path):
    out = tmp_path / "m.onnx"
    res = _invoke("export", str(run_dir), "--out", str(out), "--data", "example", "--batches", "2")
    assert res.exit_code == 0, res.output
    assert "integer kernels: " in res.output and "QLinearConv" in res.output
    assert "bit-allocation report: report.json, report.md, bits.png" in res.output
    ck = _json(_invoke("eval", str(run_dir), "-q", "--json"))
    ox = _json(_invoke("eval", str(out), "-q", "--json"))
    assert ox["kind"] == "onnx" and ox["images"] == ck["images"] == 360
    assert ck["top1"] > 60  # the model is trained
    assert abs(ox["top1"] - ck["top1"]) <= 1.0  # integer kernels round biases; ≤ 3 of 360 images


def test_export_and_eval_packed_safetensors(run_dir, tmp_path):
    out = tmp_path / "m.packed.safetensors"
    res = _invoke("export", str(run_dir), "--format", "safetensors", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "reproduces the outputs exactly" in res.output
    assert out.stat().st_size < (run_dir / "model.safetensors").stat().st_size / 4
    ck = _json(_invoke("eval", str(run_dir), "-q", "--json"))
    pk = _json(_invoke("eval", str(out), "-q", "--json"))
    for key in ("top1", "top5", "loss", "images"):
        assert pk[key] == ck[key], key
    # a packed file exports to ONNX like the checkpoint it came from
    res = _invoke("export", str(out), "--out", str(tmp_path / "from_packed.onnx"))
    assert res.exit_code == 0, res.output


def test_export_packed_onnx_default_name(run_dir):
    res = _invoke("export", str(run_dir), "--layout", "packed", "--no-verify")
    assert res.exit_code == 0, res.output
    path = run_dir / "model.packed.onnx"
    model = onnx.load(str(path))
    codes = [t for t in model.graph.initializer if t.name.endswith(".weight.codes")]
    assert {t.data_type for t in codes} == {onnx.TensorProto.INT4}
    assert model.opset_import[0].version == 21
    path.unlink()


def test_float_checkpoint_is_refused(run_dir, tmp_path):
    float_file = tmp_path / "float.safetensors"
    save_model(float_file, build_model("lenet5", 10, 1),
               ModelInfo(arch="lenet5", num_classes=10, in_channels=1, image_size=28, recipe=Recipe()))
    err = _one_line_error(_invoke("export", str(float_file), "--out", str(tmp_path / "x.onnx")))
    assert "float model" in err
    pt = tmp_path / "weights.pt"
    torch.save(build_model("lenet5", 10, 1).state_dict(), pt)
    err = _one_line_error(_invoke("export", str(pt), "--out", str(tmp_path / "x.onnx")))
    assert "quantize" in err
    err = _one_line_error(_invoke("export", "lenet5"))
    assert "not found" in err
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("args,needle", [
    (["--format", "tflite"], "unknown export format"),
    (["--layout", "qcdq"], "unknown ONNX layout"),
    (["--opset", "99"], "newer than the installed onnx"),
    (["--opset", "11"], "needs opset 13"),
    (["--layout", "packed", "--opset", "19"], "needs opset 21"),
    (["--format", "safetensors", "--opset", "21"], "--opset applies to --format onnx only"),
    (["--batches", "0"], "at least 1"),
    (["--layout", "packed", "--float-unfused"], "--float-unfused applies to --format onnx --layout qdq only"),
])
def test_bad_options(run_dir, tmp_path, args, needle):
    out = tmp_path / "x.out"
    err = _one_line_error(_invoke("export", str(run_dir), "--out", str(out), *args))
    assert needle in err
    assert _files(tmp_path) == set()


def test_failed_verification_leaves_nothing(run_dir, tmp_path, monkeypatch):
    from srqcli.export import verify

    real = verify.compare

    def broken(level, against, ref, out, step, *args, **kw):
        return real(level, against, ref, out + 50 * step, step, *args, **kw)

    monkeypatch.setattr(verify, "compare", broken)
    err = _one_line_error(_invoke("export", str(run_dir), "--out", str(tmp_path / "m.onnx")))
    assert "verification FAILED, nothing written" in err and "(tolerance: ≥90% within 1 step" in err
    assert _files(tmp_path) == set()


def test_eval_refuses_damaged_artifacts(run_dir, tmp_path):
    good = tmp_path / "m.onnx"
    assert _invoke("export", str(run_dir), "--out", str(good), "--no-verify").exit_code == 0
    data = good.read_bytes()
    cases = {
        "truncated.onnx": data[: len(data) // 3],
        "garbage.onnx": b"not an onnx file at all",
        "empty.onnx": b"",
    }
    packed = tmp_path / "m.packed.safetensors"
    assert _invoke("export", str(run_dir), "-f", "safetensors", "--out", str(packed), "--no-verify").exit_code == 0
    cases["truncated.packed.safetensors"] = packed.read_bytes()[:-100]
    for name, blob in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        _one_line_error(_invoke("eval", str(path), "-q"))
    # a valid ONNX model without srq metadata
    foreign = tmp_path / "foreign.onnx"
    model = onnx.load(str(good))
    del model.metadata_props[:]
    onnx.save(model, str(foreign))
    assert "not an srq ONNX export" in _one_line_error(_invoke("eval", str(foreign), "-q"))


def test_onnx_is_not_an_export_source(run_dir, tmp_path):
    good = tmp_path / "m.onnx"
    assert _invoke("export", str(run_dir), "--out", str(good), "--no-verify").exit_code == 0
    assert "already an ONNX export" in _one_line_error(_invoke("export", str(good), "-o", str(tmp_path / "n.onnx")))


def test_eval_warns_about_an_onnx_file_that_breaks_the_pair_bound(run_dir, tmp_path):
    """An ONNX file whose integer layer could saturate AVX2 kernels (here: one 8-bit weight code
    of 127 behind conv1's 8-bit input, as another tool might write) is still evaluated, with a
    one-line warning naming the layer; srq's own export gets none."""
    out = tmp_path / "m.onnx"
    assert _invoke("export", str(run_dir), "--out", str(out), "--no-verify").exit_code == 0
    clean = _invoke("eval", str(out), "--data", "example")
    assert clean.exit_code == 0 and "warning" not in clean.output, clean.output
    proto = onnx.load(str(out))
    init = next(t for t in proto.graph.initializer if t.name == "conv1.weight.codes")
    codes = onnx.numpy_helper.to_array(init).copy()
    codes.flat[0] = 127
    init.CopyFrom(onnx.numpy_helper.from_array(codes, init.name))
    onnx.save(proto, str(out))
    res = _invoke("eval", str(out), "--data", "example")
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.output.splitlines() if "warning:" in line]  # after a timestamp
    assert len(warnings) == 1 and "layer conv1" in warnings[0] and "AVX2" in warnings[0], res.output


def test_exported_file_as_source_without_out(run_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(run_dir / "model.safetensors", run / "model.safetensors")
    assert _invoke("export", str(run), "--no-verify").exit_code == 0  # run/model.onnx
    err = _one_line_error(_invoke("export", str(run / "model.onnx")))
    assert err == f"error: {run / 'model.onnx'} is already an ONNX export; pass the run folder {run}"
    assert _invoke("export", str(run), "-f", "safetensors", "--no-verify").exit_code == 0
    packed = run / "model.packed.safetensors"
    err = _one_line_error(_invoke("export", str(packed), "-f", "safetensors"))
    assert err == (f"error: the default output {packed} is the model being exported; "
                   "pass --out with another file name")


def test_export_output_says_pass_and_tolerance_then_wrote(run_dir, tmp_path):
    """The check comes first with its verdict, each row's tolerance and what the rows mean;
    "wrote" only after it."""
    out = tmp_path / "m.onnx"
    res = _invoke("export", str(run_dir), "--out", str(out), "--data", "example", "--batches", "2")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # the console folds long lines
    assert "PASS: every gated row is within its tolerance" in text
    assert "100.0% (≥90%)" in text and "(≥99%)" in text and "(≥97%)" not in text  # the trained model: reported
    assert "*deploy model: this file run in PyTorch with onnxruntime's integer arithmetic" in text
    assert "100.0% (all)" in text  # an all-integer LeNet: every output identical
    assert text.index("PASS: every") < text.index(f"wrote {out}")
    on_random = " ".join(_invoke("export", str(run_dir), "--out", str(tmp_path / "r.onnx")).output.split())
    assert "reported" in on_random  # top-1 on random inputs is not gated
    packed = _invoke("export", str(run_dir), "-f", "safetensors", "--out", str(tmp_path / "m.packed.safetensors"))
    assert packed.exit_code == 0, packed.output
    text = " ".join(packed.output.split())
    assert "PASS: the reloaded packed file reproduces the outputs exactly on 128 images" in text
    assert "(tolerance: bit-identical)" in text and text.index("PASS") < text.index("wrote ")


def test_export_keeps_the_folders_report(run_dir, tmp_path):
    """Exporting into a folder that has a report (a run folder) leaves its files untouched and
    does not reprint the per-layer table."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(run_dir / "model.safetensors", run / "model.safetensors")
    assert _invoke("report", str(run)).exit_code == 0
    before = {name: (run / name).stat() for name in ("report.json", "report.md", "bits.png")}
    for args in ([], ["-f", "safetensors"]):
        res = _invoke("export", str(run), *args)
        assert res.exit_code == 0, res.output
        assert "bit allocation" not in res.output and "report.json" not in res.output, res.output
    for name, stat in before.items():
        now = (run / name).stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), name


def test_exporting_one_model_twice_gives_identical_files(run_dir, tmp_path):
    """Packed safetensors (metadata in a fixed order) and ONNX: equal models, equal hashes."""
    for fmt, name in (("safetensors", "m.packed.safetensors"), ("onnx", "m.onnx")):
        blobs = set()
        for i in range(3):
            out = tmp_path / str(i) / name
            assert _invoke("export", str(run_dir), "-f", fmt, "--out", str(out), "--no-verify").exit_code == 0
            blobs.add(out.read_bytes())
        assert len(blobs) == 1, fmt
