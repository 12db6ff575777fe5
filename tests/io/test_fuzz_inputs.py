"""Fuzz-style robustness: hundreds of damaged inputs, each a clean SrqError or a success.

Valid files of every kind srq reads (recipes, ``.pt`` state_dicts, TorchScript, safetensors
state_dicts, srq model files, packed safetensors, ONNX exports, PNG/JPEG images, IDX files) are
damaged deterministically (seeded truncations, bit flips, spliced garbage, semantic edits),
fed through the public loaders and, for a subset, through the real CLI. Every case must end
in a one-line :class:`SrqError` (exit code 2 for the CLI) or, when the damage happened to leave
the file usable, in success: never another exception, a crash or a hang (per-case deadline).
"""

from __future__ import annotations

import contextlib
import gzip
import random
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import leftovers
from PIL import Image
from report.report_testutil import save_lenet_run
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from safetensors.torch import save_file
from typer.testing import CliRunner

from srqcli.cli import app
from srqcli.config import load_recipe, resolve_recipe_path
from srqcli.data import DataSpec, load_datasets
from srqcli.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from srqcli.errors import SrqError
from srqcli.export.artifacts import load_any
from srqcli.export.packed import save_packed
from srqcli.export.workflow import export_onnx
from srqcli.io.checkpoint import load_into, read_state_dict
from srqcli.io.quantized import load_model
from srqcli.models import build_model

SEED = 20240611
DEADLINE_S = 20  # per case; a hang fails the test instead of stalling it
EDGE = 4096  # bit flips land near the start or end (headers, zip directories) half the time
RECIPE_VALUES = ['"abc"', "-1", "0", "3.5", "true", "[1, 2]", "{ a = 1 }", "inf", "nan",
                 "99999999999999999999", '""', "[]", "1979-05-27"]
CASES_PER_KIND = {"recipe": 40, "pt": 30, "torchscript": 14, "safetensors": 20, "srq-model": 24,
                  "packed": 14, "onnx": 20, "png": 20, "jpeg": 16, "idx": 20}
CLI_CASES = {"recipe": 12, "srq-model": 8, "onnx": 4}
# The TorchScript original is written with APIs torch now marks deprecated; users still have such files.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")


class Hang(Exception):
    """A case ran past its deadline."""


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def expire(signum, frame):
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# -- mutations ------------------------------------------------------------------------------

def _position(rng: random.Random, size: int) -> int:
    if size > 2 * EDGE and rng.random() < 0.5:
        offset = rng.randrange(EDGE)
        return offset if rng.random() < 0.5 else size - 1 - offset
    return rng.randrange(size)


def mutate_bytes(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One seeded byte-level damage: what a bad download, disk or hand edit does to a file."""
    kind = rng.choice(["truncate", "flip", "splice", "repeat", "garbage", "empty"])
    if kind == "truncate":
        return kind, data[: rng.randrange(len(data))]
    if kind == "flip":
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            damaged[_position(rng, len(damaged))] ^= 1 << rng.randrange(8)
        return kind, bytes(damaged)
    if kind == "splice":
        at, length = _position(rng, len(data)), rng.randint(1, 64)
        return kind, data[:at] + rng.randbytes(length) + data[at + length:]
    if kind == "repeat":
        start = rng.randrange(len(data))
        end = min(len(data), start + rng.randint(1, 256))
        return kind, data[:end] + data[start:]
    if kind == "garbage":
        return kind, rng.randbytes(rng.randint(1, 2048))
    return kind, b""


def mutate_recipe(text: str, rng: random.Random) -> tuple[str, bytes]:
    """Byte damage, or an edit a person makes: wrong type, unknown key, broken syntax."""
    lines = text.splitlines()
    settings = [i for i, line in enumerate(lines) if "=" in line and not line.startswith("#")]
    kind = rng.choice(["bytes", "value", "unknown-key", "syntax", "layers", "drop-line"])
    if kind == "bytes":
        return mutate_bytes(text.encode(), rng)
    if kind == "value":
        i = rng.choice(settings)
        lines[i] = f"{lines[i].split('=')[0]}= {rng.choice(RECIPE_VALUES)}"
    elif kind == "unknown-key":
        lines.insert(rng.choice(settings), f"{rng.choice(['bogus', 'weight_bit', 'lr_'])} = 1")
    elif kind == "syntax":
        i = rng.choice(settings)
        lines[i] = rng.choice([lines[i].replace("=", ""), lines[i] + " = 2", "[" + lines[i],
                               lines[i].replace('"', "")])
    elif kind == "layers":
        value = rng.choice(['3', '"x"', "{ weight_bits = 3.5 }", "{ weight_bits = true }",
                            "{ bits = 3 }", "{ weight_bits = 1 }", "[]", "{ act_bits = [] }"])
        lines += ["[quant.layers]", f'"fc*" = {value}']
    else:
        del lines[rng.choice(settings)]
    return kind, ("\n".join(lines) + "\n").encode()


def retag_metadata(path: Path, rng: random.Random) -> tuple[str, bytes]:
    """An srq model file whose metadata was edited: values of the wrong kind or range."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    key = rng.choice(["arch", "num_classes", "in_channels", "image_size", "plan", "recipe",
                      "format_version", "normalization", "metrics", "layers"])
    meta[key] = rng.choice(["", "nope", "-3", "0", "1e9", "[]", "{}", "null", '[{"name": 1}]',
                            '{"quant": {"weight_bits": 99}}', "999"])
    return f"meta:{key}", safetensors_bytes(tensors, metadata=meta)


# -- valid originals ---------------------------------------------------------------------------

def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path | str]:
    """One valid file of each kind (small, so that each case is milliseconds)."""
    root = tmp_path_factory.mktemp("originals")
    torch.manual_seed(0)
    lenet = build_model("lenet5", 10, 1)
    torch.save(lenet.state_dict(), root / "float.pt")
    torch.jit.save(torch.jit.script(lenet), str(root / "float.ts.pt"))
    save_file(lenet.state_dict(), str(root / "float.safetensors"))
    save_lenet_run(root)
    model, info = load_model(root / "model.safetensors")
    save_packed(root / "model.packed.safetensors", model, info)
    export_onnx(model, info, root / "model.onnx", verify=False, list_ops=False)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / "image.png")
    Image.fromarray(image).save(root / "image.jpg", quality=90)
    (root / "images.idx").write_bytes(idx_bytes(rng.integers(0, 255, (20, 28, 28)), IMAGES_MAGIC))
    (root / "labels.idx.gz").write_bytes(gzip.compress(idx_bytes(rng.integers(0, 10, 20), LABELS_MAGIC)))
    return {"dir": root, "recipe": resolve_recipe_path("example").read_text()}


# -- loaders under test ------------------------------------------------------------------------

def load_weights(path: Path) -> None:
    load_into(build_model("lenet5", 10, 1), read_state_dict(path), arch="lenet5")


def load_artifact(path: Path) -> None:
    """Load, then run at the stored input size, as ``srq eval`` does (onnxruntime only parses
    a graph fully when it executes; a damaged input size only shows when the model runs)."""
    model, info, _kind = load_any(path)
    with torch.no_grad():
        model(torch.zeros(2, info.in_channels, info.image_size, info.image_size))


def load_image(path: Path) -> None:
    """Strict: decode or name the file; lenient: always a sample of the right shape."""
    root = path.parent.parent.parent
    for strict in (True, False):
        bundle = load_datasets(DataSpec(str(root), image_size=8, strict=strict))
        index = next(i for i, (p, _) in enumerate(bundle.train.base.samples) if p == str(path))
        image, _ = bundle.train[(index, 0)]
        assert image.shape == (3, 8, 8)


def load_idx_file(path: Path) -> None:
    read_idx(path, LABELS_MAGIC if "labels" in path.name else IMAGES_MAGIC)


# -- the cases ---------------------------------------------------------------------------------

def build_cases(originals: dict, work: Path) -> list[tuple[str, str, Path, Callable[[Path], None]]]:
    """``(kind, mutation, file, loader)`` for every damaged input, all from one seed."""
    rng = random.Random(SEED)
    base: Path = originals["dir"]
    sources: dict[str, tuple[Path | None, str, Callable[[Path], None]]] = {
        "recipe": (None, ".toml", lambda p: load_recipe(str(p))),
        "pt": (base / "float.pt", ".pt", load_weights),
        "torchscript": (base / "float.ts.pt", ".pt", load_weights),
        "safetensors": (base / "float.safetensors", ".safetensors", load_weights),
        "srq-model": (base / "model.safetensors", ".safetensors", load_artifact),
        "packed": (base / "model.packed.safetensors", ".safetensors", load_artifact),
        "onnx": (base / "model.onnx", ".onnx", load_artifact),
        "png": (base / "image.png", ".png", load_image),
        "jpeg": (base / "image.jpg", ".jpg", load_image),
        "idx": (None, "", load_idx_file),
    }
    cases = []
    for kind, count in CASES_PER_KIND.items():
        source, suffix, loader = sources[kind]
        for n in range(count):
            if kind == "recipe":
                mutation, data = mutate_recipe(originals["recipe"], rng)
            elif kind == "srq-model" and n % 3 == 0:
                mutation, data = retag_metadata(base / "model.safetensors", rng)
            elif kind == "idx":
                source = base / rng.choice(["images.idx", "labels.idx.gz"])
                mutation, data = mutate_bytes(source.read_bytes(), rng)
                suffix = "-labels.gz" if source.suffix == ".gz" else "-images"
            else:
                mutation, data = mutate_bytes(source.read_bytes(), rng)
            if kind in ("png", "jpeg"):
                path = image_tree(work / f"{kind}{n}") / f"damaged{suffix}"
            else:
                path = work / f"{kind}{n}{suffix}"
            path.write_bytes(data)
            cases.append((kind, mutation, path, loader))
    return cases


def image_tree(root: Path) -> Path:
    """train/ and val/ with one good image per class; returns the folder for the damaged one."""
    good = Image.new("RGB", (10, 10), (200, 30, 30))
    for split in ("train", "val"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            good.save(root / split / name / "good.png")
    return root / "train" / "a"


def run_case(loader: Callable[[Path], None], path: Path) -> str:
    with deadline(DEADLINE_S):
        try:
            loader(path)
        except SrqError as exc:
            assert "\n" not in str(exc), f"multi-line error: {exc}"
            return "error"
    return "ok"


def test_damaged_inputs_through_the_loaders(originals, tmp_path: Path) -> None:
    cases = build_cases(originals, tmp_path)
    outcomes: Counter[tuple[str, str]] = Counter()
    failures = []
    for kind, mutation, path, loader in cases:
        try:
            outcomes[kind, run_case(loader, path)] += 1
        except Exception as exc:  # noqa: BLE001 (the point: anything but SrqError is a bug)
            failures.append(f"{kind}/{mutation} {path.name}: {type(exc).__name__}: {exc}"[:300])
    print(f"\nfuzzed {len(cases)} damaged inputs through the loaders:")
    for kind in CASES_PER_KIND:
        print(f"  {kind:<12} clean error {outcomes[kind, 'error']:>3}   still valid {outcomes[kind, 'ok']:>3}")
    assert len(cases) >= 200
    assert not failures, "\n".join(failures)


def cli_args(kind: str, path: Path, out: Path) -> list[str]:
    """A recipe through ``srq quantize`` (a missing checkpoint stops a valid one before any
    training), model files through ``srq eval`` on the built-in data."""
    if kind == "recipe":
        return ["quantize", "lenet5", "--recipe", str(path), "-c", str(path.parent / "missing.pt"),
                "--out", str(out), "--quiet"]
    return ["eval", str(path), "--data", "example", "--batch-size", "512", "--quiet"]


def test_damaged_inputs_through_the_cli(originals, tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    cases = [case for case in build_cases(originals, tmp_path) if case[0] in CLI_CASES]
    chosen = [case for kind, count in CLI_CASES.items()
              for case in rng.sample([c for c in cases if c[0] == kind], count)]
    runner = CliRunner()
    outcomes: Counter[str] = Counter()
    for n, (kind, mutation, path, _) in enumerate(chosen):
        out = tmp_path / f"run{n}"
        with deadline(DEADLINE_S):
            result = runner.invoke(app, cli_args(kind, path, out))
        label = f"{kind}/{mutation} {path.name}"
        assert result.exit_code in (0, 2), f"{label}: exit {result.exit_code}\n{result.output}"
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
            f"{label}: {result.exception!r}"
        if result.exit_code == 2:
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error:"), f"{label}: {result.stderr}"
        assert not out.exists(), f"{label}: left {list(out.rglob('*'))}"
        outcomes["exit 2" if result.exit_code else "exit 0"] += 1
    print(f"\nfuzzed {len(chosen)} damaged inputs through the CLI: {dict(outcomes)}")
    assert leftovers(tmp_path) == []
