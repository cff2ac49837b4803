"""txt2img through ``modules.processing.process_images`` with tiny random-weight checkpoints.

Checks A1111's promises: sizes, seeds (image i of a batch == seed + i alone), interrupt/skip, infotext round trip,
saved files, settings overrides. Pictures are 32x32 (16x16 latents) with 3-4 steps to keep the suite fast.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modules import infotext
from modules.processing import Processed, StableDiffusionProcessingTxt2Img, process_images
from modules.sd.tiling import is_tiling

if TYPE_CHECKING:
    from tests.pipeline_fixtures import PipelineEnv

pytest_plugins = ["tests.pipeline_fixtures"]

JS_KEYS = {
    "prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds", "subseed", "all_subseeds",
    "subseed_strength", "width", "height", "sampler_name", "cfg_scale", "steps", "batch_size", "restore_faces",
    "face_restoration_model", "sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash", "seed_resize_from_w",
    "seed_resize_from_h", "denoising_strength", "extra_generation_params", "index_of_first_image", "infotexts",
    "styles", "job_timestamp", "clip_skip", "is_using_inpainting_conditioning", "version",
}


def txt2img(env: PipelineEnv, model: Any, **kwargs: Any) -> StableDiffusionProcessingTxt2Img:
    params = {"prompt": "a red cube", "negative_prompt": "blurry", "seed": 7, "steps": 3, "width": 32, "height": 32,
              "sampler_name": "Euler a", "cfg_scale": 5.0, "do_not_save_samples": True, "do_not_save_grid": True}
    params.update(kwargs)
    return env.apply(StableDiffusionProcessingTxt2Img(sd_model=model, **params))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def assert_same_picture(a: Image.Image, b: Image.Image, levels: int = 1) -> None:
    """Equal up to float rounding: a batched UNet call may round differently from a single one."""
    assert a.size == b.size
    assert np.abs(pixels(a) - pixels(b)).max() <= levels


class InterruptAt:
    """A CFG hook that interrupts (or skips) at a given batch and sampler step."""

    def __init__(self, p: Any, iteration: int, step: int, action: str) -> None:
        self.p, self.iteration, self.step, self.action = p, iteration, step, action

    def cfg_denoiser_callback(self, params: Any) -> None:
        if self.p.iteration == self.iteration and params.sampling_step == self.step:
            getattr(self.p.state, self.action)()


def test_batch_images_equal_their_seeds_alone(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    batch = process_images(txt2img(pipeline_env, tiny_sd1, seed=11, batch_size=4, do_not_save_grid=False))
    assert batch.index_of_first_image == 1 and len(batch.images) == 5  # grid first
    assert batch.images[0].size == (64, 64)
    assert batch.all_seeds == [11, 12, 13, 14]
    assert [im.size for im in batch.images[1:]] == [(32, 32)] * 4
    for seed in (11, 13):
        alone = process_images(txt2img(pipeline_env, tiny_sd1, seed=seed))
        assert_same_picture(alone.images[0], batch.images[1 + seed - 11])
    again = process_images(txt2img(pipeline_env, tiny_sd1, seed=13))
    assert pixels(again.images[0]).tolist() == pixels(alone.images[0]).tolist()
    different = process_images(txt2img(pipeline_env, tiny_sd1, seed=99))
    assert np.abs(pixels(different.images[0]) - pixels(alone.images[0])).max() > 5


def test_requested_sizes_and_js(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    res = process_images(txt2img(pipeline_env, tiny_sd1, width=48, height=32, n_iter=2))
    assert [im.size for im in res.images] == [(48, 32), (48, 32)]
    info = json.loads(res.js())
    assert set(info) == JS_KEYS
    assert info["all_seeds"] == [7, 8] and info["width"] == 48 and info["sd_model_name"] == "tiny-sd1"
    assert len(info["infotexts"]) == 2 and info["index_of_first_image"] == 0


def test_infotext_round_trip_and_saved_png(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    p = txt2img(pipeline_env, tiny_sd1, seed=1234, do_not_save_samples=False, sampler_name="DPM++ 2M",
                prompt="a (red:1.2) cube, [blue|green]", negative_prompt="ugly, blurry")
    res = process_images(p)
    text = res.infotexts[0]
    assert res.images[0].info["parameters"] == text
    parsed = infotext.parse_generation_parameters(text)
    assert parsed["Prompt"] == "a (red:1.2) cube, [blue|green]"
    assert parsed["Negative prompt"] == "ugly, blurry"
    assert parsed["Steps"] == "3" and parsed["Seed"] == "1234" and parsed["CFG scale"] == "5.0"
    assert parsed["Sampler"] == "DPM++ 2M" and parsed["Schedule type"] == "Karras"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("32", "32")
    assert parsed["Model"] == "tiny-sd1" and re.fullmatch(r"[0-9a-f]{10}", parsed["Model hash"])

    files = list((pipeline_env.data_dir / "outputs" / "txt2img-images").rglob("*.png"))
    assert len(files) == 1
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", files[0].parent.name)
    assert files[0].name == "00000-1234.png"
    with Image.open(files[0]) as saved:
        assert saved.info["parameters"] == text
    # written before sampling, as in A1111 (so without what the sampler adds, e.g. the real schedule type)
    assert (pipeline_env.data_dir / "params.txt").read_text(encoding="utf8").startswith(p.all_prompts[0])


def test_interrupt_returns_images_so_far(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    p = txt2img(pipeline_env, tiny_sd1, n_iter=3, seed=20)
    p.callbacks = InterruptAt(p, iteration=1, step=0, action="interrupt")
    res = process_images(p)
    assert len(res.images) == 2  # batch 0 finished, batch 1 stopped part-way, batch 2 never started
    assert p.state.interrupted
    p.state.begin()  # the job queue starts every job like this
    full = process_images(txt2img(pipeline_env, tiny_sd1, seed=20))
    assert pixels(res.images[0]).tolist() == pixels(full.images[0]).tolist()
    assert np.abs(pixels(res.images[1]) - pixels(process_images(txt2img(pipeline_env, tiny_sd1, seed=21)).images[0])
                  ).max() > 0


def test_skip_moves_on_to_the_next_batch(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    p = txt2img(pipeline_env, tiny_sd1, n_iter=3, seed=30)
    p.callbacks = InterruptAt(p, iteration=1, step=0, action="skip")
    res = process_images(p)
    assert len(res.images) == 3 and not p.state.skipped and not p.state.interrupted
    assert p.state.job_no == 3
    alone = process_images(txt2img(pipeline_env, tiny_sd1, seed=32))
    assert pixels(res.images[2]).tolist() == pixels(alone.images[0]).tolist()


def test_progress_and_live_preview(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    state = pipeline_env.state
    previews: list[int] = []
    state.preview_decoder = lambda latent: previews.append(latent.shape[0]) or "preview"
    state.begin("txt2img")
    process_images(txt2img(pipeline_env, tiny_sd1, steps=4))
    assert state.sampling_steps == 4 and state.job_no == 1 and state.job_count == 1
    assert state.current_latent is not None and tuple(state.current_latent.shape) == (1, 4, 16, 16)
    # one preview per sampler step index seen by the denoiser (steps 0, 0, 1, 2: the index advances after a step)
    assert previews == [1, 1, 1] and state.current_image == "preview" and state.id_live_preview == 3


def test_override_settings_applied_and_restored(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    opts = pipeline_env.opts
    overrides = {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337}
    p = txt2img(pipeline_env, tiny_sd1, override_settings=overrides)
    res = process_images(p)
    parsed = infotext.parse_generation_parameters(res.infotexts[0])
    assert parsed["Clip skip"] == "2" and parsed["ENSD"] == "31337"
    assert opts.CLIP_stop_at_last_layers == 1 and opts.eta_noise_seed_delta == 0


def test_prompt_comments_styles_and_missing_lora(pipeline_env: PipelineEnv, tiny_sd1: Any, tmp_path: Path) -> None:
    from modules.lora import LoraNetworks
    from modules.styles import PromptStyle, StyleDatabase

    styles = StyleDatabase(tmp_path / "styles.csv")
    styles.styles["shiny"] = PromptStyle("shiny", "{prompt}, shiny", "dull")
    p = txt2img(pipeline_env, tiny_sd1, prompt="a cube <lora:nowhere:0.5> # note to self\n", styles=["shiny"])
    p.prompt_styles = styles
    p.lora_networks = LoraNetworks([tmp_path / "Lora"])
    res = process_images(p)
    assert p.all_prompts == ["a cube <lora:nowhere:0.5> \n, shiny"]
    assert p.prompts == ["a cube  \n, shiny"]
    assert p.all_negative_prompts == ["blurry, dull"]
    assert "Lora not found: nowhere" in res.comments


def write_tiny_lora(path: Path) -> None:
    """A LoRA for the tiny SD1 model: one UNet attention projection and one text-encoder MLP layer."""
    g = torch.Generator().manual_seed(0)
    q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    te = "lora_te_text_model_encoder_layers_0_mlp_fc1"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"{q}.lora_up.weight": torch.randn(32, 2, generator=g),
               f"{q}.lora_down.weight": torch.randn(2, 32, generator=g),
               f"{te}.lora_up.weight": torch.randn(256, 2, generator=g),
               f"{te}.lora_down.weight": torch.randn(2, 128, generator=g)}, str(path))


def test_lora_changes_the_picture_and_is_named_in_the_infotext(pipeline_env: PipelineEnv, tiny_sd1: Any,
                                                               tmp_path: Path) -> None:
    from modules.lora import LoraNetworks

    write_tiny_lora(tmp_path / "Lora" / "tiny.safetensors")
    networks = LoraNetworks([tmp_path / "Lora"])
    plain = txt2img(pipeline_env, tiny_sd1)
    plain.lora_networks = networks
    before = process_images(plain).images[0]
    with_lora = txt2img(pipeline_env, tiny_sd1, prompt="a red cube <lora:tiny:2>")
    with_lora.lora_networks = networks
    res = process_images(with_lora)
    assert re.search(r'Lora hashes: "tiny: [0-9a-f]{12}"', res.infotexts[0])
    assert with_lora.prompts == ["a red cube "]
    assert np.abs(pixels(res.images[0]) - pixels(before)).max() > 0
    after = txt2img(pipeline_env, tiny_sd1)
    after.lora_networks = networks
    assert pixels(process_images(after).images[0]).tolist() == pixels(before).tolist()  # weights restored


@pytest.mark.parametrize("sampler", ["DDIM", "Heun", "DPM++ 2M SDE", "UniPC", "LCM", "DPM2 a"])
def test_samplers_run(pipeline_env: PipelineEnv, tiny_sd1: Any, sampler: str) -> None:
    res = process_images(txt2img(pipeline_env, tiny_sd1, sampler_name=sampler, prompt="[a:b:1] AND c:0.5", steps=2))
    assert res.images[0].size == (32, 32)
    assert infotext.parse_generation_parameters(res.infotexts[0])["Sampler"] == sampler


def test_sdxl_txt2img(pipeline_env: PipelineEnv, tiny_sdxl: Any) -> None:
    res = process_images(txt2img(pipeline_env, tiny_sdxl, width=32, height=48, steps=2, negative_prompt=""))
    assert res.images[0].size == (32, 48)


def test_tiling_is_switched_off_afterwards(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    res = process_images(txt2img(pipeline_env, tiny_sd1, tiling=True, steps=2))
    assert "Tiling: True" in res.infotexts[0]
    assert not is_tiling(tiny_sd1.unet) and not is_tiling(tiny_sd1.vae)


def test_processed_without_images_has_infotext(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    p = txt2img(pipeline_env, tiny_sd1)
    p.state.interrupt()
    p.state.interrupted = True
    res = process_images(p)
    assert res.images == [] and res.infotexts and isinstance(res, Processed)


def test_compiled_unet_runs_hookless_calls(pipeline_env, tiny_sd1) -> None:
    """`sd_models.load_checkpoint` puts a `--compile` UNet in extras; the pipeline must call it (a stand-in here)."""
    calls = []

    def fake_compiled(x, t, context, y=None):
        calls.append(x.shape)
        return tiny_sd1.unet(x, t, context, y)

    tiny_sd1.extras["compiled_unet"] = fake_compiled
    try:
        p = pipeline_env.apply(StableDiffusionProcessingTxt2Img(
            sd_model=tiny_sd1, prompt="a", seed=1, steps=2, width=32, height=32, sampler_name="Euler",
            do_not_save_samples=True, do_not_save_grid=True))
        process_images(p)
    finally:
        del tiny_sd1.extras["compiled_unet"]
    assert calls
