"""Extensions inside a real ``process_images`` run (tiny random-weight SD1, 32x32, 2 steps): every Script hook
and processing callback fires in pipeline order with the script's own argument slice; a failing extension is
logged by name and the picture is still made."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules import extensions, infotext, script_callbacks, scripts
from modules.processing import StableDiffusionProcessingImg2Img, StableDiffusionProcessingTxt2Img, process_images
from tests.extensions.conftest import ExtEnv, module_of

if TYPE_CHECKING:
    from tests.pipeline_fixtures import PipelineEnv

pytest_plugins = ["tests.pipeline_fixtures"]

TXT2IMG_HIRES_ORDER = [
    "setup", "before_process", "process", "before_process_batch", "after_extra_networks_activate", "process_batch",
    "process_before_every_sampling", "cb:cfg_denoiser", "cb:cfg_denoised", "cb:cfg_after_cfg",
    # again for the hires pass: extra networks are activated again for it, and A1111 fires the hook there too
    "after_extra_networks_activate", "before_hr", "process_before_every_sampling", "cb:extra_noise",
    "cb:cfg_denoiser", "cb:cfg_denoised", "cb:cfg_after_cfg", "post_sample", "postprocess_batch",
    "postprocess_batch_list", "postprocess_image", "postprocess_maskoverlay", "postprocess_image_after_composite",
    "cb:before_image_saved", "cb:image_saved", "postprocess",
]


def hook_names(calls: list[tuple]) -> list[str]:
    """Call names, each sampling run's per-step CFG callbacks listed once (they fire every step)."""
    collapsed: list[str] = []
    run: set[str] = set()
    for name, *_ in calls:
        if not name.startswith("cb:cfg"):
            run = set()
        elif name in run:
            continue
        run.add(name)
        collapsed.append(name)
    return collapsed


def with_scripts(p: Any, runner: scripts.ScriptRunner, **request: Any) -> Any:
    """Wire scripts and callbacks into ``p`` the way the API will: args from the request, then the runner."""
    _, p.script_args = scripts.build_script_args(runner, **request)
    p.scripts = runner
    p.callbacks = script_callbacks
    return p


@pytest.fixture
def only_test_ext(ext_env: ExtEnv) -> list[extensions.Extension]:
    ext_env.add("test_ext")
    exts = ext_env.list()
    scripts.load_scripts(exts, builtin_scripts_dir=ext_env.builtin_dir)
    return exts


def test_every_hook_and_callback_fires_in_order(pipeline_env: PipelineEnv, tiny_sd1: Any,
                                                only_test_ext: list[extensions.Extension]) -> None:
    pipeline_env.opts.data["img2img_extra_noise"] = 0.05
    calls = module_of("Test AlwaysOn").CALLS
    p = pipeline_env.apply(StableDiffusionProcessingTxt2Img(
        sd_model=tiny_sd1, prompt="a red cube", seed=3, steps=2, width=32, height=32, sampler_name="Euler",
        enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=2, denoising_strength=0.5,
        do_not_save_grid=True))
    with_scripts(p, scripts.scripts_txt2img, alwayson_scripts={"test alwayson": {"args": [1.5, False]}})
    res = process_images(p)

    assert res.images[0].size == (48, 48)
    assert hook_names(calls) == TXT2IMG_HIRES_ORDER
    assert calls[0] == ("setup", 1.5, False, "fast"), "each script sees its own argument slice"
    assert ("process", 1.5, False, "fast") in calls
    assert [c[1] for c in calls if c[0] == "process_before_every_sampling"] == [(1, 4, 16, 16), (1, 4, 24, 24)]
    assert [c[2] for c in calls if c[0] == "cb:cfg_denoiser"] == [2, 2, 2, 2], "2 steps, then 2 hires steps"
    assert ("postprocess", 1) in calls
    parsed = infotext.parse_generation_parameters(res.infotexts[0])
    assert parsed["Test strength"] == "1.5", "process() may add infotext entries"
    saved = [c[1] for c in calls if c[0] == "cb:image_saved"]
    assert len(saved) == 1 and Path(saved[0]).is_file()
    with Image.open(saved[0]) as picture:
        assert picture.info["test_ext"] == "saved by test_ext", "before_image_saved may change the PNG chunks"


def test_inpainting_reaches_mask_hooks(pipeline_env: PipelineEnv, tiny_sd1: Any,
                                       only_test_ext: list[extensions.Extension]) -> None:
    calls = module_of("Test AlwaysOn").CALLS
    init = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    mask = Image.new("L", (32, 32), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 23, 23), fill=255)
    p = pipeline_env.apply(StableDiffusionProcessingImg2Img(
        sd_model=tiny_sd1, prompt="a red cube", seed=5, steps=2, width=32, height=32, sampler_name="Euler",
        init_images=[init], mask=mask, denoising_strength=0.6, do_not_save_samples=True, do_not_save_grid=True))
    with_scripts(p, scripts.scripts_img2img)
    res = process_images(p)
    assert res.images[0].size == (32, 32)
    names = hook_names(calls)
    assert names.index("post_sample") > names.index("on_mask_blend") > names.index("process_before_every_sampling")
    assert ("postprocess_maskoverlay", 0) in calls
    assert calls[0] == ("setup", 0.5, True, "fast"), "without a request the controls' defaults are used"


def test_selectable_script_runs_the_job(pipeline_env: PipelineEnv, tiny_sd1: Any,
                                        only_test_ext: list[extensions.Extension]) -> None:
    calls = module_of("Test AlwaysOn").CALLS
    runner = scripts.scripts_txt2img
    p = pipeline_env.apply(StableDiffusionProcessingTxt2Img(
        sd_model=tiny_sd1, prompt="a red cube", seed=3, steps=2, width=32, height=32, sampler_name="Euler",
        do_not_save_samples=True, do_not_save_grid=True))
    with_scripts(p, runner, script_name="Test Selectable", script_args=["from the API"])
    res = runner.run(p, *p.script_args)
    assert ("run", "from the API") in calls and "postprocess" in hook_names(calls)
    assert infotext.parse_generation_parameters(res.infotexts[0])["Test note"] == "from the API"
    assert runner.run(p, 0, *p.script_args[1:]) is None, "index 0 is the dropdown's None"


def test_failing_extension_is_named_and_the_image_still_made(pipeline_env: PipelineEnv, tiny_sd1: Any,
                                                             loaded: list[extensions.Extension],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    p = pipeline_env.apply(StableDiffusionProcessingTxt2Img(
        sd_model=tiny_sd1, prompt="a red cube", seed=3, steps=2, width=32, height=32, sampler_name="Euler",
        do_not_save_samples=True, do_not_save_grid=True))
    with_scripts(p, scripts.scripts_txt2img)
    with caplog.at_level(logging.ERROR):
        res = process_images(p)
    assert len(res.images) == 1 and res.images[0].size == (32, 32)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any('extension broken_ext, script "Broken AlwaysOn" (broken_process.py), process()' in e for e in errors)
    assert any("cfg_denoiser callback broken_ext/broken_process.py/cfg_denoiser (extension broken_ext)" in e
               for e in errors)
    assert "boom from broken_ext process" in caplog.text
    names = hook_names(module_of("Test AlwaysOn").CALLS)
    assert names.count("cb:cfg_denoiser") == 1 and names[-1] == "postprocess", "the other extension ran fully"
    assert module_of("Broken AlwaysOn").CALLS == ["postprocess"], "the broken script's later hooks still run"
