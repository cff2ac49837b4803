"""Hires fix (txt2img ``enable_hr``) through ``process_images`` with a tiny random-weight SD1 checkpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from modules import infotext
from modules.processing import StableDiffusionProcessingTxt2Img, process_images

if TYPE_CHECKING:
    from tests.pipeline_fixtures import PipelineEnv

pytest_plugins = ["tests.pipeline_fixtures"]


def hires(env: PipelineEnv, model: Any, **kwargs: Any) -> StableDiffusionProcessingTxt2Img:
    params = {"prompt": "a red cube", "seed": 3, "steps": 3, "width": 32, "height": 32, "sampler_name": "Euler",
              "enable_hr": True, "denoising_strength": 0.5, "hr_second_pass_steps": 2, "do_not_save_samples": True,
              "do_not_save_grid": True}
    params.update(kwargs)
    return env.apply(StableDiffusionProcessingTxt2Img(sd_model=model, **params))


def test_latent_hires_scale(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    p = hires(pipeline_env, tiny_sd1, hr_scale=2.0, hr_upscaler="Latent (bicubic)", hr_prompt="a blue cube",
              hr_sampler_name="DPM++ 2M")
    res = process_images(p)
    assert res.images[0].size == (64, 64)
    assert p.state.job_count == 2 and p.state.job_no == 2
    parsed = infotext.parse_generation_parameters(res.infotexts[0])
    assert parsed["Size-1"] == "32" and parsed["Hires upscale"] == "2.0" and parsed["Hires steps"] == "2"
    assert parsed["Hires upscaler"] == "Latent (bicubic)" and parsed["Denoising strength"] == "0.5"
    assert parsed["Hires prompt"] == "a blue cube" and parsed["Hires sampler"] == "DPM++ 2M"
    assert parsed["Hires schedule type"] == "Karras"
    again = process_images(hires(pipeline_env, tiny_sd1, hr_scale=2.0, hr_upscaler="Latent (bicubic)",
                                 hr_prompt="a blue cube", hr_sampler_name="DPM++ 2M"))
    assert list(again.images[0].getdata()) == list(res.images[0].getdata())


@pytest.mark.parametrize(("resize", "expected"), [((48, 40), (48, 40)), ((48, 0), (48, 48))])
def test_pixel_upscaler_hires_resize(pipeline_env: PipelineEnv, tiny_sd1: Any, resize: tuple[int, int],
                                     expected: tuple[int, int]) -> None:
    p = hires(pipeline_env, tiny_sd1, hr_resize_x=resize[0], hr_resize_y=resize[1], hr_upscaler="Lanczos")
    res = process_images(p)
    assert res.images[0].size == expected
    parsed = infotext.parse_generation_parameters(res.infotexts[0])
    assert (parsed["Hires resize-1"], parsed["Hires resize-2"]) == (str(resize[0]), str(resize[1]))
    assert parsed["Hires upscaler"] == "Lanczos" and "Hires prompt" not in res.infotexts[0]


def test_interrupted_first_pass_skips_the_second(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    p = hires(pipeline_env, tiny_sd1)

    class Stop:
        def cfg_denoiser_callback(self, params: Any) -> None:
            p.state.interrupt()

    p.callbacks = Stop()
    res = process_images(p)
    assert [im.size for im in res.images] == [(32, 32)]
