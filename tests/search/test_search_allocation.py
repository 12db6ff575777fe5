"""Allocation (bit config) files: written by search-bits, read by srq quantize --bit-config."""

from __future__ import annotations

from pathlib import Path

import pytest

from srqcli.errors import SrqError
from srqcli.nn.surgery import LayerBits
from srqcli.search.allocation import read_allocation, write_allocation


def test_round_trip(tmp_path: Path) -> None:
    plan = [LayerBits("conv1", 4, 8), LayerBits("fc", 2, 3)]
    path = write_allocation(tmp_path / "bits.toml", plan, ["a header comment"])
    assert read_allocation(path) == {"conv1": {"weight_bits": 4, "act_bits": 8},
                                     "fc": {"weight_bits": 2, "act_bits": 3}}


@pytest.mark.parametrize("text,needle", [
    (None, "bit config not found"),
    ("[layers\n", "is not valid TOML"),
    ("title = 'no layers'\n", "needs a [layers] table"),
    ("[layers]\n", "needs a [layers] table"),
    ("[layers]\nconv1 = 3\n", "layers.conv1 must be a table"),
])
def test_bad_files_are_one_line_errors(tmp_path: Path, text: str | None, needle: str) -> None:
    path = tmp_path / "bits.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(SrqError) as info:
        read_allocation(path)
    assert needle in str(info.value) and "\n" not in str(info.value)
