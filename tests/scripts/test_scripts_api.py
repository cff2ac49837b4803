"""The built-in scripts through the real ``/sdapi/v1`` API (uvicorn on a local port, ``requests``): listed in
``scripts``/``script-info``, run with ``script_name`` + positional ``script_args``, bad values answered with 422."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modules import scripts
from modules.infotext import parse_generation_parameters
from tests.api.server import TINY, Served, assert_error, decode, serve

pytest_plugins = ["tests.pipeline_fixtures"]

XYZ_STEPS_BY_CFG = ["Steps", "2, 3", [], "CFG Scale", "3, 7", [], "Nothing", "", [], True, True, False, False,
                    False, False, False, 0, False]


@pytest.fixture
def api(tmp_path: Path, tiny_sd1: Any, tiny_checkpoint_dir: Path, one_thread: None,
        builtin_scripts: scripts.ScriptRunner) -> Iterator[Served]:
    served = serve(tmp_path, tiny_sd1, tiny_checkpoint_dir)
    served.ctx.scripts_info = scripts.script_info
    served.ctx.prepare_scripts = scripts.prepare_api_request
    yield served
    served.stop()


def test_scripts_are_listed_with_their_arguments(api: Served) -> None:
    listed = api.get("scripts").json()
    for tab in ("txt2img", "img2img"):
        assert {"x/y/z plot", "prompt matrix", "prompts from file or textbox"} <= set(listed[tab])
    info = {(s["name"], s["is_img2img"]): s for s in api.get("script-info").json()}
    xyz = info[("x/y/z plot", False)]
    assert [a["label"] for a in xyz["args"][:3]] == ["X type", "X values", "X values"]
    assert len(xyz["args"]) == 18 and "Steps" in xyz["args"][0]["choices"]
    assert "Hires steps" not in info[("x/y/z plot", True)]["args"][0]["choices"]


def test_xyz_plot_over_http(api: Served) -> None:
    body = api.txt2img(script_name="X/Y/Z plot", script_args=XYZ_STEPS_BY_CFG)
    assert len(body["images"]) == 5, "the grid, then the four cells"
    grid = decode(body["images"][0])
    assert grid.width > 64 and grid.height > 64
    info = json.loads(body["info"])
    assert info["index_of_first_image"] == 1 and len(info["infotexts"]) == 5
    grid_params = parse_generation_parameters(info["infotexts"][0])
    assert grid_params["X Type"] == "Steps" and grid_params["Y Values"] == "3, 7"
    single = api.txt2img(steps=3, cfg_scale=7)
    cell = np.asarray(decode(body["images"][4]).convert("RGB"))
    assert np.array_equal(cell, np.asarray(decode(single["images"][0]).convert("RGB")))
    left, top = grid.width - 64, grid.height - 64
    assert np.array_equal(np.asarray(grid.convert("RGB").crop((left + 32, top + 32, left + 64, top + 64))), cell)


def test_script_errors_are_422(api: Served) -> None:
    bad = list(XYZ_STEPS_BY_CFG)
    bad[1] = "2, lots"
    assert_error(api.post("txt2img", json={**TINY, "script_name": "x/y/z plot", "script_args": bad}), 422,
                 "X axis (Steps)", "'lots' is not a whole number")
    assert_error(api.post("txt2img", json={**TINY, "script_name": "prompts from file or textbox",
                                           "script_args": [False, False, "start", "ok\n--stepz 3"]}), 422,
                 "Line 2", "unknown option --stepz")
    matrix = api.txt2img(prompt="a cube|red", script_name="prompt matrix",
                         script_args=[False, False, "positive", "comma", 0])
    assert len(matrix["images"]) == 3
