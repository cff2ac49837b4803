"""The "Prompts from file or textbox" script: plain and ``--option`` lines, A1111's option names and types, clear
errors naming the line (before any picture), and one job per line with that line's overrides."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from modules import infotext, scripts
from modules.errors import InvalidRequest
from modules.processing import process_images
from tests.scripts.conftest import script_module, tiny_job, with_script

if TYPE_CHECKING:
    from tests.pipeline_fixtures import PipelineEnv

pytest_plugins = ["tests.pipeline_fixtures"]

TITLE = "Prompts from file or textbox"


def test_parse_lines(builtin_scripts: scripts.ScriptRunner) -> None:
    parse = script_module(TITLE).parse_prompt_lines
    text = ("a red cube\n\n  --prompt a blue   cube --negative_prompt \"dark, blurry\" --steps 10 --seed -3 "
            "--cfg_scale 4.5 --sampler_name \"euler a\" --scheduler karras --tiling true --styles one two\n"
            "--width 64 --height 32 --denoising_strength 0.4 --n_iter 2 --do_not_save_samples False\n")
    assert parse(text) == [
        {"prompt": "a red cube"},
        {"prompt": "a blue cube", "negative_prompt": "dark, blurry", "steps": 10, "seed": -3, "cfg_scale": 4.5,
         "sampler_name": "Euler a", "scheduler": "Karras", "tiling": True, "styles": ["one", "two"]},
        {"width": 64, "height": 32, "denoising_strength": 0.4, "n_iter": 2, "do_not_save_samples": False},
    ]
    assert parse("--styles \"a, b\"") == [{"styles": ["a", "b"]}]
    assert parse("a cube -- with dashes") == [{"prompt": "a cube -- with dashes"}], "only lines starting with --"


@pytest.mark.parametrize(("text", "words"), [
    ("ok\n--prompt x --colour red", ["Line 2", "unknown option --colour", "--negative_prompt"]),
    ("--steps ten", ["Line 1", "'ten'", "--steps"]),
    ("--steps 0", ["Line 1", "at least 1"]),
    ("--width 30", ["multiple of 8"]),
    ("--sampler_name Nope", ["Line 1", "unknown sampler"]),
    ("--tiling maybe", ["true or false"]),
    ("--prompt \"unclosed", ["Line 1", "quotation"]),
    ("--steps", ["has no value"]),
    ("--steps 3 4", ["expected an option", "'4'"]),
    ("--outpath_samples /etc", ["inside the data folder"]),
    ("--outpath_grids ../../elsewhere", ["inside the data folder"]),
    ("--sd_model other", ["Line 1", "no model cache"]),
])
def test_bad_lines_name_the_line(builtin_scripts: scripts.ScriptRunner, text: str, words: list[str]) -> None:
    with pytest.raises(InvalidRequest) as raised:
        script_module(TITLE).parse_prompt_lines(text)
    for word in words:
        assert word in str(raised.value)


def test_prompt_position(builtin_scripts: scripts.ScriptRunner) -> None:
    combine = script_module(TITLE).combine
    assert combine("masterpiece", "a cat", "start") == "a cat masterpiece"
    assert combine("masterpiece", "a cat", "end") == "masterpiece a cat"
    assert combine("", "a cat", "end") == "a cat" and combine("own", None, "start") == "own"


def test_one_job_per_line_with_its_overrides(pipeline_env: PipelineEnv, tiny_sd1: Any,
                                             builtin_scripts: scripts.ScriptRunner) -> None:
    lines = "a red cube\n--prompt \"a blue cube\" --steps 3 --seed 7 --cfg_scale 4 --batch_size 2\nyellow"
    p = tiny_job(pipeline_env, tiny_sd1, prompt="", negative_prompt="", seed=20)
    with_script(p, builtin_scripts, TITLE, [True, False, "start", lines])
    res = builtin_scripts.run(p, *p.script_args)
    assert len(res.images) == len(res.infotexts) == 4
    params = [infotext.parse_generation_parameters(t) for t in res.infotexts]
    assert [(q["Prompt"], q["Steps"], q["Seed"], q["CFG scale"]) for q in params] == [
        ("a red cube", "2", "20", "5.0"), ("a blue cube", "3", "7", "4.0"), ("a blue cube", "3", "8", "4.0"),
        ("yellow", "2", "23", "5.0")], "iterating: each line starts after the previous line's pictures"
    alone = process_images(tiny_job(pipeline_env, tiny_sd1, prompt="a blue cube", negative_prompt="", steps=3,
                                    seed=7, cfg_scale=4, batch_size=2))
    assert np.array_equal(np.asarray(alone.images[0]), np.asarray(res.images[1]))


def test_same_seed_for_every_line_and_nothing_made_on_errors(pipeline_env: PipelineEnv, tiny_sd1: Any,
                                                              builtin_scripts: scripts.ScriptRunner) -> None:
    p = tiny_job(pipeline_env, tiny_sd1, prompt="cube", seed=-1)
    with_script(p, builtin_scripts, TITLE, [False, True, "end", "red\nblue"])
    res = builtin_scripts.run(p, *p.script_args)
    params = [infotext.parse_generation_parameters(t) for t in res.infotexts]
    assert [q["Prompt"] for q in params] == ["cube red", "cube blue"]
    assert params[0]["Seed"] == params[1]["Seed"] != "-1"

    bad = tiny_job(pipeline_env, tiny_sd1)
    with_script(bad, builtin_scripts, TITLE, [False, False, "start", "fine\n--steps 2 --bogus 1"])
    state = pipeline_env.state
    state.job_no = 0
    with pytest.raises(InvalidRequest, match="Line 2: unknown option --bogus"):
        builtin_scripts.run(bad, *bad.script_args)
    assert state.job_no == 0 and bad.all_prompts is None, "no line was generated"
