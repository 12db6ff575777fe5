"""Recipes: strict TOML loading, CLI overrides, round trip through the saved recipe."""

from __future__ import annotations

import re

import pytest
import tomllib

from srqcli.config import (
    BUILTIN_RECIPES,
    Recipe,
    apply_overrides,
    load_recipe,
    recipe_from_dict,
    to_toml,
)
from srqcli.errors import SrqError


@pytest.mark.parametrize("path", sorted(BUILTIN_RECIPES.glob("*.toml")), ids=lambda p: p.stem)
def test_builtin_recipes_load_and_round_trip(path):
    recipe = load_recipe(str(path))
    assert recipe_from_dict(tomllib.loads(to_toml(recipe))) == recipe


def test_load_by_name():
    assert load_recipe("example").model.arch == "lenet5"


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[quant]\nweight_bit = 3\n")
    with pytest.raises(SrqError, match="quant.weight_bit"):
        load_recipe(str(p))


def test_wrong_type_is_named(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[train]\nepochs = 'three'\n")
    with pytest.raises(SrqError, match="train.epochs.*wrong type"):
        load_recipe(str(p))


def test_malformed_toml(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[train\nepochs = 3\n")
    with pytest.raises(SrqError, match="not valid TOML"):
        load_recipe(str(p))


def test_unknown_builtin_recipe():
    with pytest.raises(SrqError, match="unknown recipe"):
        load_recipe("does-not-exist")


@pytest.mark.parametrize("key,value,match", [
    ("quant.weight_bits", 1, "between 2 and 8"),
    ("quant.act_bits", 9, "between 2 and 8"),
    ("quant.pi_mode", "x", "pi_mode"),
    ("quant.sigma_max", 0.6, "sigma_max"),
    ("quant.sigma_max", 0.2, "sigma_max.*sigma_init"),  # below the initial σ/α (0.25)
    ("dropbits.variant", "x", "variant"),
    ("dropbits.rate", 1.5, "rate"),
    ("train.optimizer", "lamb", "optimizer"),
])
def test_overrides_are_validated(key, value, match):
    with pytest.raises(SrqError, match=match):
        apply_overrides(Recipe(), {key: value})


def test_none_overrides_keep_recipe_values():
    r = apply_overrides(load_recipe("example"), {"quant.weight_bits": None, "train.epochs": 2})
    assert r.quant.weight_bits == 4 and r.train.epochs == 2


def test_per_layer_bits_are_checked():
    with pytest.raises(SrqError, match="layers"):
        recipe_from_dict({"quant": {"layers": {"fc*": {"weight_bits": 12}}}})
    with pytest.raises(SrqError, match="unknown key"):
        recipe_from_dict({"quant": {"layers": {"fc*": {"bits": 3}}}})


def test_method_keys_are_validated():
    r = recipe_from_dict({"quant": {"method": "lsq", "temperature_end": 0.1},
                          "dropbits": {"variant": "none"}})
    assert r.quant.method == "lsq" and r.quant.temperature_end == 0.1
    assert tomllib.loads(to_toml(r))["quant"]["method"] == "lsq"
    with pytest.raises(SrqError, match="quant.method must be one of"):
        recipe_from_dict({"quant": {"method": "pact"}})
    with pytest.raises(SrqError, match="DropBits is part of SRQ"):
        recipe_from_dict({"quant": {"method": "rq"}})  # the default DropBits variant is on
    with pytest.raises(SrqError, match="temperature_start must be positive"):
        recipe_from_dict({"quant": {"temperature_start": 0.0}})
    with pytest.raises(SrqError, match="per_channel is not supported with method dq"):
        recipe_from_dict({"quant": {"method": "dq", "per_channel": True},
                          "dropbits": {"variant": "none"}})


@pytest.mark.parametrize("value,match", [
    ("3", "'fc\\*' must be a table like"),
    ("{ weight_bits = 3.5 }", "'fc\\*'.weight_bits must be a whole number of bits, got 3.5"),
    ("{ act_bits = true }", "must be a whole number of bits, got True"),
])
def test_per_layer_bits_must_be_tables_of_whole_numbers(tmp_path, value, match):
    p = tmp_path / "r.toml"
    p.write_text(f'[quant.layers]\n"fc*" = {value}\n')
    with pytest.raises(SrqError, match=match):
        load_recipe(str(p))


def test_recipe_must_be_a_table():
    # e.g. the recipe JSON inside a damaged model file
    with pytest.raises(SrqError, match="a recipe must be a table of settings, got list"):
        recipe_from_dict([1, 2])


# One value outside the allowed range for every numeric recipe key (issue 15: --quant-lr -1 ran
# to a silent 10% top-1, --lr -1 was a traceback). The table must name every numeric field.
OUT_OF_RANGE = [
    ("model.num_classes", 1), ("model.in_channels", 0), ("model.pretrain_epochs", -1),
    ("model.pretrain_lr", 0.0), ("model.pretrain_lr", 11.0),
    ("data.image_size", 0), ("data.resize_size", -4), ("data.batch_size", 0), ("data.workers", -1),
    ("data.calib_batches", 0), ("data.train_limit", 0), ("data.val_limit", -1), ("data.channels", 2),
    ("quant.weight_bits", 9), ("quant.act_bits", 1), ("quant.input_bits", 0),
    ("quant.output_bits", 16), ("quant.first_last_bits", 1), ("quant.window", 0),
    ("quant.window", 65), ("quant.sigma_init", 0.01), ("quant.sigma_max", 0.75),
    ("quant.temperature_start", -1.0), ("quant.temperature_end", float("inf")),
    ("dropbits.rate", -0.1), ("dropbits.rate", 1.0), ("dropbits.anneal_epochs", -1),
    ("dropbits.bn_reestimate_batches", -1),
    ("train.epochs", -1), ("train.lr", -1.0), ("train.lr", float("nan")), ("train.quant_lr", -1.0),
    ("train.quant_lr", 100.0), ("train.momentum", 1.0), ("train.momentum", -0.5),
    ("train.weight_decay", -1e-4), ("train.seed", -1), ("train.seed", 2**32),
    ("train.checkpoint_every", -1), ("train.checkpoint_minutes", -1.0),
    ("train.checkpoint_minutes", float("inf")),
]


def _numeric_keys() -> set[str]:
    import typing

    keys = set()
    for section in ("model", "data", "quant", "dropbits", "train"):
        obj = getattr(Recipe(), section)
        for name, hint in typing.get_type_hints(type(obj)).items():
            if {int, float} & ({hint} | set(typing.get_args(hint))):
                keys.add(f"{section}.{name}")
    return keys


def test_every_numeric_recipe_key_is_range_checked():
    assert {key for key, _ in OUT_OF_RANGE} == _numeric_keys()


@pytest.mark.parametrize("key,value", OUT_OF_RANGE, ids=lambda v: str(v))
def test_numeric_recipe_key_out_of_range_is_named(tmp_path, key, value):
    section, name = key.split(".")
    p = tmp_path / "r.toml"
    p.write_text(f"[{section}]\n{name} = {_toml_number(value)}\n")
    with pytest.raises(SrqError, match=rf"^{re.escape(key)} must be .*, got "):
        load_recipe(str(p))


def _toml_number(value: float) -> str:
    return {"nan": "nan", "inf": "inf"}.get(str(value), repr(value))


@pytest.mark.parametrize("key,value", [
    ("train.lr", 0.0), ("train.quant_lr", 10.0), ("train.epochs", 0), ("dropbits.rate", 0.0),
    ("train.momentum", 0.0), ("train.seed", 2**32 - 1), ("data.workers", 0),
    ("train.checkpoint_minutes", 0.0), ("model.num_classes", 2), ("quant.window", 64),
])
def test_numeric_recipe_key_at_the_edge_of_its_range_is_accepted(key, value):
    section, name = key.split(".")
    assert getattr(getattr(recipe_from_dict({section: {name: value}}), section), name) == value


def test_a_search_recipe_is_named_for_srq_search_bits(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[search]\nbudget = "avg-bits=3"\n')
    with pytest.raises(SrqError, match=r"has a \[search\] table: replay it with srq search-bits"):
        load_recipe(str(p))


def test_search_settings_round_trip_as_a_search_table():
    from srqcli.search.workflow import SearchConfig

    cfg = SearchConfig(budget="size=1.5MB", pins={"conv1": 8, "fc*": 4}, gate_init="budget")
    data = tomllib.loads(to_toml(load_recipe("example"), cfg))
    assert SearchConfig(**data.pop("search")) == cfg
    assert recipe_from_dict(data) == load_recipe("example")


@pytest.mark.parametrize("table,match", [
    ("mean = [0.5, 0.5]", r"^data\.mean has 2 values; give one per channel: 3 for RGB images, 1 for grayscale$"),
    ("channels = 3\nstd = [0.5]", r"^data\.std has 1 value but the images have 3 channels \(RGB\)"),
    ("std = [0.5, 0.0, 0.5]", r"^data\.std must be positive .*got \(0\.5, 0, 0\.5\)$"),
    ("mean = [0.5]\nstd = [0.2, 0.2, 0.2]", r"^data\.std has 3 values but data\.mean has 1"),
    ("mean = [0.5, nan, 0.5]", r"^data\.mean must be finite numbers"),
    ('interpolation = "lanczos"', r"^data\.interpolation must be one of bilinear, bicubic, nearest, got 'lanczos'$"),
    ('mean = ["a"]', r"^recipe key 'data\.mean' has the wrong type"),
])
def test_preprocessing_keys_are_checked(tmp_path, table, match):
    p = tmp_path / "r.toml"
    p.write_text(f"[data]\n{table}\n")
    with pytest.raises(SrqError, match=match):
        load_recipe(str(p))


def test_preprocessing_keys_round_trip():
    recipe = recipe_from_dict({"data": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "channels": 3,
                                        "interpolation": "bicubic", "image_size": 32, "resize_size": 36}})
    again = recipe_from_dict(tomllib.loads(to_toml(recipe)))
    assert again.data == recipe.data and again.data.mean == [0.5, 0.5, 0.5]


def test_train_compile_is_a_recipe_key_off_by_default() -> None:
    from srqcli.config import recipe_from_dict

    assert recipe_from_dict({}).train.compile is False
    assert recipe_from_dict({"train": {"compile": True}}).train.compile is True
