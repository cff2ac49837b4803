"""The "X/Y/Z plot" script on the tiny SD1 model (32x32, 2-3 steps): every grid cell is pixel-identical to a single
run with that cell's values, the legend adds a label band, Z values make side-by-side grids, the checkpoint axis
switches models through the app's model cache, and bad values stop the plot before any sampling."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image

from modules import infotext, scripts, sd_models, shared, xyz_plot
from modules.errors import InvalidRequest
from modules.processing import process_images
from tests.scripts.conftest import tiny_job, with_script
from tests.sd.factory import write_tiny_checkpoint

if TYPE_CHECKING:
    from tests.pipeline_fixtures import PipelineEnv

pytest_plugins = ["tests.pipeline_fixtures"]

TITLE = "X/Y/Z plot"


def plot_args(x: tuple = ("Nothing", ""), y: tuple = ("Nothing", ""), z: tuple = ("Nothing", ""), *,
              legend: bool = True, lone: bool = False, sub_grids: bool = False, keep_random: bool = False,
              margin: int = 0, csv_mode: bool = False) -> list:
    """A1111's positional script_args of the X/Y/Z plot."""
    axes = [(a[0], a[1], a[2] if len(a) > 2 else []) for a in (x, y, z)]
    return [*axes[0], *axes[1], *axes[2], legend, lone, sub_grids, keep_random, False, False, False, margin,
            csv_mode]


def run_plot(p: Any, runner: scripts.ScriptRunner, args: list) -> Any:
    with_script(p, runner, TITLE, args)
    return runner.run(p, *p.script_args)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def single(env: PipelineEnv, model: Any, **fields: Any) -> np.ndarray:
    return pixels(process_images(tiny_job(env, model, **fields)).images[0])


def test_every_cell_equals_its_single_run(pipeline_env: PipelineEnv, tiny_sd1: Any,
                                          builtin_scripts: scripts.ScriptRunner) -> None:
    margin = 2
    p = tiny_job(pipeline_env, tiny_sd1, do_not_save_grid=False)
    res = run_plot(p, builtin_scripts, plot_args(("Steps", "2, 3"), ("CFG Scale", "3-7 [2]"), lone=True,
                                                 margin=margin))
    assert len(res.images) == 1 + 4 and res.index_of_first_image == 1
    assert len(res.infotexts) == len(res.images)
    grid = res.images[0]
    cells_w, cells_h = 2 * 32 + margin, 2 * 32 + margin
    left, top = grid.width - cells_w, grid.height - cells_h
    assert left > 0 and top > 0, "the legend adds a band of row labels and one of column labels"
    assert (pixels(grid.crop((0, top, left, grid.height))) < 128).any(), "row labels are drawn"

    expected = {}
    for iy, cfg in enumerate((3.0, 7.0)):
        for ix, steps in enumerate((2, 3)):
            expected[(ix, iy)] = single(pipeline_env, tiny_sd1, steps=steps, cfg_scale=cfg)
    for (ix, iy), want in expected.items():
        x, y = left + ix * (32 + margin), top + iy * (32 + margin)
        assert np.array_equal(pixels(grid.crop((x, y, x + 32, y + 32))), want), f"grid cell {(ix, iy)}"
    sub_images = [pixels(im) for im in res.images[1:]]
    assert all(np.array_equal(a, expected[k]) for a, k in zip(sub_images, [(0, 0), (1, 0), (0, 1), (1, 1)],
                                                               strict=True))
    assert len({a.tobytes() for a in expected.values()}) == 4, "the axes change the pictures"

    grid_params = infotext.parse_generation_parameters(res.infotexts[0])
    assert grid_params["Script"] == TITLE and grid_params["X Type"] == "Steps" and grid_params["X Values"] == "2, 3"
    assert grid_params["Y Type"] == "CFG Scale" and grid_params["Y Values"] == "3-7 [2]"
    cell_params = infotext.parse_generation_parameters(res.infotexts[4])
    assert (cell_params["Steps"], cell_params["CFG scale"], cell_params["Seed"]) == ("3", "7.0", "5")
    saved = list((pipeline_env.data_dir / "outputs" / "txt2img-grids").rglob("*.png"))
    assert len(saved) == 1 and Image.open(saved[0]).size == grid.size, "the plot's grid is saved like a grid"


def test_z_axis_and_random_seed_fixed_once(pipeline_env: PipelineEnv, tiny_sd1: Any,
                                           builtin_scripts: scripts.ScriptRunner) -> None:
    p = tiny_job(pipeline_env, tiny_sd1, seed=-1)
    res = run_plot(p, builtin_scripts, plot_args(("Prompt S/R", "red, blue"), z=("Sampler", "", ["Euler", "DDIM"]),
                                                 legend=False, sub_grids=True, lone=True, margin=10))
    combined, first, second = res.images[:3]
    assert res.index_of_first_image == 3
    assert first.size == second.size == (32 + 10 + 32, 32), "without a legend a sub-grid is its cells and margins"
    assert combined.size == (74 + 10 + 74, 32)
    assert np.array_equal(pixels(combined.crop((84, 0, 158, 32))), pixels(second))
    assert np.array_equal(pixels(second.crop((42, 0, 74, 32))), pixels(res.images[6])), "DDIM, blue"
    seeds = {infotext.parse_generation_parameters(t)["Seed"] for t in res.infotexts[3:]}
    assert len(seeds) == 1 and seeds != {"-1"}, "a random seed is resolved once for every cell"
    params = [infotext.parse_generation_parameters(t) for t in res.infotexts[3:]]
    assert [(q["Prompt"], q["Sampler"]) for q in params] == [
        ("a red cube", "Euler"), ("a blue cube", "Euler"), ("a red cube", "DDIM"), ("a blue cube", "DDIM")]


@pytest.mark.parametrize(("x", "message"), [
    (("Steps", "2, many"), "'many' is not a whole number"),
    (("Sampler", "Euler, Nope"), "unknown value 'Nope'"),
    (("Prompt S/R", "green, blue"), "'green' is not in the prompt"),
    (("Size", "32x30"), "not a size"),
    (("Colour", "red"), "not an axis type"),
])
def test_bad_values_raise_before_sampling(pipeline_env: PipelineEnv, tiny_sd1: Any,
                                          builtin_scripts: scripts.ScriptRunner, monkeypatch: pytest.MonkeyPatch,
                                          x: tuple, message: str) -> None:
    made = []
    monkeypatch.setattr(xyz_plot, "process_images", lambda pc: made.append(pc))
    p = tiny_job(pipeline_env, tiny_sd1)
    with pytest.raises(InvalidRequest, match=message):
        run_plot(p, builtin_scripts, plot_args(("Steps", "2"), x))
    assert made == []


def test_checkpoint_axis_switches_models(pipeline_env: PipelineEnv, tmp_path: Path,
                                         builtin_scripts: scripts.ScriptRunner, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    from modules import cmd_args, devices
    from modules.paths import paths_from_args

    ckpt_dir = tmp_path / "ckpts"
    ckpt_dir.mkdir()
    write_tiny_checkpoint("sd1", ckpt_dir, name="alpha", seed=1)
    write_tiny_checkpoint("sd1", ckpt_dir, name="beta", seed=2)
    args = cmd_args.parse_args(["--data-dir", str(tmp_path / "data"), "--ckpt-dir", str(ckpt_dir), "--use-cpu",
                                "all", "--no-half"], environ={})
    paths = paths_from_args(args)
    cache = sd_models.ModelCache(args, devices.choose(devices.detect_capabilities(), args), paths)
    monkeypatch.setattr(shared, "model_cache", cache)
    p = tiny_job(pipeline_env, None, do_not_save_samples=True)
    p.sd_model = cache.get(next(iter(sd_models.list_models(paths).values())))
    res = run_plot(p, builtin_scripts, plot_args(("Checkpoint name", "", ["beta", "alpha"]), lone=True))
    models = [infotext.parse_generation_parameters(t)["Model"] for t in res.infotexts[1:]]
    assert models == ["beta", "alpha"]
    assert not np.array_equal(pixels(res.images[1]), pixels(res.images[2])), "different weights, different pictures"
    alone = tiny_job(pipeline_env, cache.get(sd_models.get_closest_checkpoint_match("beta", sd_models.list_models(
        paths))))
    assert np.array_equal(pixels(process_images(alone).images[0]), pixels(res.images[1]))
    with pytest.raises(InvalidRequest, match="unknown value 'gamma'"):
        run_plot(tiny_job(pipeline_env, p.sd_model), builtin_scripts, plot_args(("Checkpoint name", "gamma")))


def test_interrupt_stops_after_the_current_cell(pipeline_env: PipelineEnv, tiny_sd1: Any,
                                                builtin_scripts: scripts.ScriptRunner,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    made = []

    def interrupt_after(pc: Any) -> Any:
        made.append(pc.steps)
        result = process_images(pc)
        pc.state.interrupt()
        return result

    monkeypatch.setattr(xyz_plot, "process_images", interrupt_after)
    p = tiny_job(pipeline_env, tiny_sd1)
    res = run_plot(p, builtin_scripts, plot_args(("Steps", "2, 3, 4"), legend=False))
    assert made == [2], "no new cell starts once the job is interrupted"
    grid = pixels(res.images[0])
    assert grid.shape == (32, 96, 3) and (grid[:, 32:] == 255).all(), "missing cells stay blank"
