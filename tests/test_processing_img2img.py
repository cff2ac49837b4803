"""img2img and inpainting through ``process_images`` with tiny random-weight checkpoints (SD1 and a 9-channel
SD1 inpainting model).

The inpainting promise checked here is A1111's: outside the blurred mask the result is the original picture (within
1/255), for "Whole picture" and for "Only masked".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules import infotext, masking
from modules.processing import StableDiffusionProcessingImg2Img, StableDiffusionProcessingTxt2Img, process_images

if TYPE_CHECKING:
    from tests.pipeline_fixtures import PipelineEnv

pytest_plugins = ["tests.pipeline_fixtures"]


def noise_picture(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def box_mask(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


def img2img(env: PipelineEnv, model: Any, **kwargs: Any) -> StableDiffusionProcessingImg2Img:
    params = {"prompt": "a red cube", "negative_prompt": "blurry", "seed": 5, "steps": 4, "width": 32, "height": 32,
              "sampler_name": "Euler a", "denoising_strength": 0.6, "init_images": [noise_picture(32, 32)],
              "do_not_save_samples": True, "do_not_save_grid": True}
    params.update(kwargs)
    return env.apply(StableDiffusionProcessingImg2Img(sd_model=model, **params))


def test_img2img_size_seed_and_infotext(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    init = noise_picture(48, 40, seed=3)
    res = process_images(img2img(pipeline_env, tiny_sd1, init_images=[init], resize_mode=1, batch_size=2))
    assert [im.size for im in res.images] == [(32, 32), (32, 32)]
    parsed = infotext.parse_generation_parameters(res.infotexts[1])
    assert parsed["Denoising strength"] == "0.6" and parsed["Seed"] == "6"
    # the init picture is encoded once per job; each image's posterior sample is seeded with its own seed
    again = process_images(img2img(pipeline_env, tiny_sd1, init_images=[init], resize_mode=1, batch_size=2))
    assert [np.asarray(im).tolist() for im in again.images] == [np.asarray(im).tolist() for im in res.images]


@pytest.mark.parametrize("sampler", ["DDIM", "DPM++ 2M"])
def test_img2img_fix_steps_and_timestep_samplers(pipeline_env: PipelineEnv, tiny_sd1: Any, sampler: str) -> None:
    pipeline_env.opts.set("img2img_fix_steps", True)
    p = img2img(pipeline_env, tiny_sd1, sampler_name=sampler, steps=3, denoising_strength=0.3)
    res = process_images(p)
    assert res.images[0].size == (32, 32)
    assert p.state.sampling_steps == 3  # exactly the requested steps


@pytest.mark.parametrize("only_masked", [False, True])
def test_inpaint_keeps_pixels_outside_the_blurred_mask(pipeline_env: PipelineEnv, tiny_sd1: Any,
                                                       only_masked: bool) -> None:
    init = noise_picture(64, 64, seed=1)
    mask = box_mask(64, 64, (24, 20, 40, 44))
    p = img2img(pipeline_env, tiny_sd1, init_images=[init], mask=mask, width=64 if not only_masked else 32,
                height=64 if not only_masked else 32, mask_blur=2, inpaint_full_res=only_masked,
                inpaint_full_res_padding=4, inpainting_fill=1, denoising_strength=0.9)
    res = process_images(p)
    out = np.asarray(res.images[0], dtype=int)
    assert out.shape == (64, 64, 3)
    blurred = np.asarray(masking.prepare_mask(mask, blur_x=2, blur_y=2))
    outside = blurred == 0
    assert np.abs(out - np.asarray(init, dtype=int))[outside].max() <= 1
    inside = np.asarray(mask) == 255
    assert np.abs(out - np.asarray(init, dtype=int))[inside].mean() > 5
    parsed = infotext.parse_generation_parameters(res.infotexts[0])
    assert parsed["Mask blur"] == "2"
    assert parsed["Inpaint area"] == ("Only masked" if only_masked else "Whole picture")


@pytest.mark.parametrize("fill", [0, 2, 3])
def test_masked_content_modes(pipeline_env: PipelineEnv, tiny_sd1: Any, fill: int) -> None:
    mask = box_mask(32, 32, (8, 8, 23, 23))
    res = process_images(img2img(pipeline_env, tiny_sd1, mask=mask, inpainting_fill=fill, inpaint_full_res=False,
                                 inpainting_mask_invert=1, mask_blur=1, sampler_name="DDIM", steps=3))
    parsed = infotext.parse_generation_parameters(res.infotexts[0])
    assert parsed["Masked content"] == masking.MASKED_CONTENT_NAMES[fill]
    assert parsed["Mask mode"] == "Inpaint not masked"
    outside = np.asarray(masking.prepare_mask(mask, invert=True, blur_x=1, blur_y=1)) == 0
    assert outside.sum() > 50
    original = np.asarray(img2img(pipeline_env, tiny_sd1).init_images[0], dtype=int)
    assert np.abs(np.asarray(res.images[0], dtype=int) - original)[outside].max() <= 1


def test_inpainting_model_img2img_and_txt2img(pipeline_env: PipelineEnv, tiny_sd1_inpaint: Any) -> None:
    init = noise_picture(32, 32, seed=2)
    mask = box_mask(32, 32, (10, 10, 21, 21))
    p = img2img(pipeline_env, tiny_sd1_inpaint, init_images=[init], mask=mask, inpaint_full_res=False, mask_blur=0)
    res = process_images(p)
    assert res.images[0].size == (32, 32) and res.is_using_inpainting_conditioning
    assert p.image_conditioning.shape == (1, 5, 16, 16)
    assert "Conditional mask weight: 1.0" in res.infotexts[0]
    outside = np.asarray(mask) == 0
    assert np.abs(np.asarray(res.images[0], dtype=int) - np.asarray(init, dtype=int))[outside].max() <= 1

    t = pipeline_env.apply(StableDiffusionProcessingTxt2Img(
        sd_model=tiny_sd1_inpaint, prompt="a cube", seed=1, steps=2, width=32, height=32, do_not_save_samples=True))
    assert process_images(t).images[0].size == (32, 32) and t.is_using_inpainting_conditioning


def test_blank_only_masked_mask_falls_back_to_img2img(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    p = img2img(pipeline_env, tiny_sd1, mask=Image.new("L", (32, 32), 0), inpaint_full_res=True, steps=2)
    res = process_images(p)
    assert res.images[0].size == (32, 32)
    assert "blank" in res.comments and p.inpaint_full_res is False


def test_too_many_init_images_is_an_error(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    p = img2img(pipeline_env, tiny_sd1, init_images=[noise_picture(32, 32)] * 3, batch_size=2)
    with pytest.raises(RuntimeError, match="bad number of images"):
        process_images(p)


@pytest.mark.parametrize("fill", [1, 2])
def test_img2img_image_of_a_batch_equals_its_seed_alone(pipeline_env: PipelineEnv, tiny_sd1: Any, fill: int) -> None:
    """The posterior sample and masked-content noise of image i use its own seed, as txt2img's noise does."""
    init = noise_picture(32, 32, seed=5)
    mask = box_mask(32, 32, (8, 8, 24, 24))
    batch = process_images(img2img(pipeline_env, tiny_sd1, init_images=[init], mask=mask, inpainting_fill=fill,
                                   inpaint_full_res=False, batch_size=4, seed=100))
    alone = process_images(img2img(pipeline_env, tiny_sd1, init_images=[init], mask=mask, inpainting_fill=fill,
                                   inpaint_full_res=False, batch_size=1, seed=102))
    assert np.array_equal(np.asarray(batch.images[2]), np.asarray(alone.images[0]))
    assert not np.array_equal(np.asarray(batch.images[0]), np.asarray(batch.images[1]))
