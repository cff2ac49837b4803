"""The "Prompt matrix" script: every subset of the ``|`` parts, the grid shape and legend, seeds, and the negative
prompt variant, on the tiny SD1 model."""

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

TITLE = "Prompt matrix"


def test_combinations(builtin_scripts: scripts.ScriptRunner) -> None:
    module = script_module(TITLE)
    parts, prompts = module.matrix_prompts("a cat | red, | in a hat")
    assert parts == ["a cat", "red", "in a hat"]
    assert prompts == ["a cat", "a cat, red", "a cat, in a hat", "a cat, red, in a hat"]
    _, at_start = module.matrix_prompts("a cat|red|hat", put_at_start=True, delimiter=" ")
    assert at_start == ["a cat", "red a cat", "hat a cat", "red hat a cat"]
    assert module.matrix_prompts("just one")[1] == ["just one"]
    assert len(module.matrix_prompts("a|b|c|d|e")[1]) == 16
    assert module.grid_shape(3) == (4, 2) and module.grid_shape(2) == (2, 2) and module.grid_shape(0) == (1, 1)
    with pytest.raises(InvalidRequest, match="13 variable parts"):
        module.matrix_prompts("x" + "|y" * 13)


def test_matrix_grid_with_legend(pipeline_env: PipelineEnv, tiny_sd1: Any,
                                 builtin_scripts: scripts.ScriptRunner) -> None:
    p = tiny_job(pipeline_env, tiny_sd1, prompt="a cube|red|shiny|tall", batch_size=3)
    with_script(p, builtin_scripts, TITLE, [False, False, "positive", "comma", 0])
    res = builtin_scripts.run(p, *p.script_args)
    assert len(res.images) == 1 + 8 and res.index_of_first_image == 1 and len(res.infotexts) == 9
    grid = res.images[0]
    left, top = grid.width - 4 * 32, grid.height - 2 * 32
    assert left > 0 and top > 0, "part labels above the columns and beside the rows"
    prompts = [infotext.parse_generation_parameters(t)["Prompt"] for t in res.infotexts[1:]]
    assert prompts == ["a cube", "a cube, red", "a cube, shiny", "a cube, red, shiny", "a cube, tall",
                       "a cube, red, tall", "a cube, shiny, tall", "a cube, red, shiny, tall"]
    assert {infotext.parse_generation_parameters(t)["Seed"] for t in res.infotexts[1:]} == {"5"}
    for i, image in enumerate(res.images[1:]):
        col, row = i % 4, i // 4
        cell = grid.crop((left + col * 32, top + row * 32, left + col * 32 + 32, top + row * 32 + 32))
        assert np.array_equal(np.asarray(cell), np.asarray(image.convert("RGB"))), f"cell {i}"
    alone = process_images(tiny_job(pipeline_env, tiny_sd1, prompt="a cube, red, tall"))
    assert np.array_equal(np.asarray(alone.images[0]), np.asarray(res.images[6])), "same as a single run"


def test_negative_prompt_and_different_seeds(pipeline_env: PipelineEnv, tiny_sd1: Any,
                                             builtin_scripts: scripts.ScriptRunner) -> None:
    p = tiny_job(pipeline_env, tiny_sd1, negative_prompt="blurry|dark", seed=11)
    with_script(p, builtin_scripts, TITLE, [False, True, "negative", "space", 4])
    res = builtin_scripts.run(p, *p.script_args)
    params = [infotext.parse_generation_parameters(t) for t in res.infotexts[1:]]
    assert [(q["Prompt"], q["Negative prompt"], q["Seed"]) for q in params] == [
        ("a red cube", "blurry", "11"), ("a red cube", "blurry dark", "12")]
    assert res.images[0].width == 2 * 32 + 4 and res.images[0].height > 32


def test_bad_arguments(pipeline_env: PipelineEnv, tiny_sd1: Any, builtin_scripts: scripts.ScriptRunner) -> None:
    p = tiny_job(pipeline_env, tiny_sd1, prompt="a|b")
    with_script(p, builtin_scripts, TITLE, [False, False, "sideways", "comma", 0])
    with pytest.raises(InvalidRequest, match="positive or negative"):
        builtin_scripts.run(p, *p.script_args)
