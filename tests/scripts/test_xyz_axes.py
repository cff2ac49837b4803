"""``modules.xyz_axes``: A1111's value syntax (lists, ranges with steps or counts, CSV quoting), axis lookup and the
checks that reject bad values before a plot starts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from modules.errors import InvalidRequest
from modules.xyz_axes import (
    axis_options,
    bind_prompt_sr,
    confirm_prompt_sr,
    find_axis,
    fix_seed_values,
    join_values,
    parse_values,
    split_values,
)
from modules.xyz_plot import Axis, cell_order

OPTIONS = axis_options(False)


def axis(label: str) -> object:
    return find_axis(label, OPTIONS)


@pytest.mark.parametrize(("text", "expected"), [
    ("1, 2, 5", [1, 2, 5]),
    ("1-5", [1, 2, 3, 4, 5]),
    ("1-10 (+2)", [1, 3, 5, 7, 9]),
    ("10-1 (-3)", [10, 7, 4, 1]),
    ("1-10 [5]", [1, 3, 5, 7, 10]),
    ("2, 5-6, 9", [2, 5, 6, 9]),
    ("-1", [-1]),
])
def test_int_values_and_ranges(text: str, expected: list[int]) -> None:
    assert parse_values(axis("Seed"), text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("3, 7.5", [3.0, 7.5]),
    ("0.5-1.5 (+0.5)", [0.5, 1.0, 1.5]),
    ("1-2 [3]", [1.0, 1.5, 2.0]),
    ("5-7", [5.0, 6.0, 7.0]),
])
def test_float_values_and_ranges(text: str, expected: list[float]) -> None:
    assert parse_values(axis("CFG Scale"), text) == pytest.approx(expected)


@pytest.mark.parametrize(("label", "text", "words"), [
    ("Steps", "2, x", ["X axis (Steps)", "'x' is not a whole number"]),
    ("Steps", "2.5", ["not a whole number"]),
    ("Steps", "0, 2", ["out of range", "at least 1"]),
    ("Steps", "1-5 (-1)", ["never reaches"]),
    ("Steps", "", ["has no values"]),
    ("CFG Scale", "high", ["not a number"]),
    ("Denoising", "0.5, 1.5", ["between 0.0 and 1.0"]),
    ("Clip skip", "0", ["out of range"]),
    ("Size", "500x512", ["not a size"]),
    ("Sampler", "Euler, Nope", ["unknown value 'Nope'", "Euler a"]),
    ("Schedule type", "Karras, Sideways", ["unknown value 'Sideways'"]),
    ("Hires upscaler", "Magic", ["unknown value 'Magic'"]),
    ("Steps", "1-100000", ["at most 1000"]),
])
def test_bad_values_are_clear_errors(label: str, text: str, words: list[str]) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_values(axis(label), text)
    message = str(raised.value)
    for word in words:
        assert word in message


def test_choice_axes_take_the_dropdown_list_unless_text_mode() -> None:
    sampler = axis("Sampler")
    assert parse_values(sampler, "Euler", ["euler a", "DDIM"]) == ["Euler a", "DDIM"], "names are canonicalised"
    assert parse_values(sampler, "Euler", ["DDIM"], csv_mode=True) == ["Euler"]
    assert parse_values(sampler, "DPM++ 2M Karras") == ["DPM++ 2M Karras"], "legacy names are kept for processing"
    assert parse_values(axis("Scheduler"), "karras, automatic") == ["Karras", "Automatic"]
    assert parse_values(axis("Hires upscaler"), "latent (bicubic), lanczos") == ["Latent (bicubic)", "Lanczos"]
    assert parse_values(axis("Size"), "512X768, 64 x 32") == ["512x768", "64x32"]


def test_csv_quoting_round_trips() -> None:
    assert split_values('cat, "red, big dog", bird') == ["cat", "red, big dog", "bird"]
    assert split_values(join_values(["a", "b, c", 'say "hi"'])) == ["a", "b, c", 'say "hi"']
    assert parse_values(axis("Prompt S/R"), '"red, cube", blue') == ["red, cube", "blue"]


def test_axis_lookup_by_index_label_or_alias_per_tab() -> None:
    assert find_axis(4, OPTIONS) is OPTIONS[4]
    assert find_axis("4", OPTIONS) is OPTIONS[4]
    assert find_axis("cfg scale", OPTIONS).label == "CFG Scale"
    assert find_axis(None, OPTIONS).label == "Nothing"
    img2img = [o.label for o in axis_options(True)]
    assert "Hires steps" not in img2img and "Denoising" in img2img and "Checkpoint name" in img2img
    with pytest.raises(InvalidRequest, match="Y type 'Colour' is not an axis type"):
        find_axis("Colour", OPTIONS, "Y")
    with pytest.raises(InvalidRequest, match="index"):
        find_axis(len(OPTIONS), OPTIONS)


def test_random_seeds_are_fixed_unless_kept() -> None:
    fixed = fix_seed_values([-1, 5], keep_random=False)
    assert fixed[1] == 5 and fixed[0] != -1 and isinstance(fixed[0], int)
    assert fix_seed_values([-1, 5], keep_random=True) == [-1, 5]


def test_prompt_search_and_replace() -> None:
    p = SimpleNamespace(prompt="a red cube", negative_prompt="red blur")
    values = parse_values(axis("Prompt S/R"), "red, blue")
    confirm_prompt_sr(p, values, "X")
    bind_prompt_sr(axis("Prompt S/R"), values).apply(p, "blue")
    assert (p.prompt, p.negative_prompt) == ("a blue cube", "blue blur")
    with pytest.raises(InvalidRequest, match="'green' is not in the prompt"):
        confirm_prompt_sr(SimpleNamespace(prompt="a cube", negative_prompt=""), ["green", "red"], "X")


def test_costly_axis_changes_slowest() -> None:
    def make(label: str, n: int) -> Axis:
        return Axis("?", axis(label), list(range(n)), "")

    plain = cell_order([make("Steps", 2), make("Seed", 2), make("Nothing", 1)])
    assert plain == [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)], "X changes fastest"
    costly = cell_order([make("Checkpoint name", 2), make("Seed", 2), make("Nothing", 1)])
    assert costly == [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0)], "the checkpoint switches once"


def test_prompt_order_permutes_terms_in_place() -> None:
    order = axis("Prompt order")
    values = parse_values(order, "red, big, cube")
    assert len(values) == 6 and values[0] == ("red", "big", "cube")
    p = SimpleNamespace(prompt="a red and big cube, photo")
    order.apply(p, ("cube", "red", "big"))
    assert p.prompt == "a cube and red big, photo"
    assert order.label_for(("cube", "red", "big")) == "cube, red, big"
    with pytest.raises(InvalidRequest, match="at most 1000"):
        parse_values(order, "a, b, c, d, e, f, g")


def test_first_indexes_are_a1111s() -> None:
    """API clients written for A1111 send axis types as indexes; the common ones line up."""
    txt2img = [o.label for o in OPTIONS]
    assert txt2img[:12] == ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps", "CFG Scale",
                            "Prompt S/R", "Prompt order", "Sampler", "Hires sampler", "Checkpoint name"]
    img2img = [o.label for o in axis_options(True)]
    assert img2img[4:10] == ["Steps", "CFG Scale", "Image CFG Scale", "Prompt S/R", "Prompt order", "Sampler"]


def test_values_may_come_as_json_lists() -> None:
    assert parse_values(axis("Steps"), [2, "4-5"]) == [2, 4, 5]
    assert parse_values(axis("Sampler"), "", "Euler, DDIM") == ["Euler", "DDIM"]
