"""Hires fix for txt2img (A1111's ``enable_hr``): sample small, upscale, then img2img at the target size.

Pass 1 runs at ``width`` x ``height``. The latents are then either interpolated ("Latent ..." upscalers) or decoded,
enlarged by a pixel upscaler and encoded again; pass 2 noises them to ``denoising_strength`` and samples
``hr_second_pass_steps`` (or ``steps``) steps with the hires sampler, scheduler and prompts. New noise comes from the
same seeds, so a seed still reproduces its image.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from modules import images
from modules.infotext import old_hires_fix_first_pass_dimensions
from modules.processing_hooks import run_script_hook
from modules.upscaling import latent_upscale_modes

log = logging.getLogger(__name__)

DEFAULT_LATENT_MODE = "Latent"


def latent_factor(p: Any) -> int:
    """Pixels per latent cell for this model (8 for real checkpoints; A1111's ``opt_f``)."""
    return int(p.sd_model.vae.config.downscale)


def calculate_target_resolution(p: Any) -> None:
    """``hr_upscale_to_x/y`` and the latent crop for an aspect-preserving ``hr_resize_x/y`` (A1111's rules)."""
    f = latent_factor(p)
    if getattr(p.opts, "use_old_hires_fix_width_height", False) and p.applied_old_hires_behavior_to != (p.width,
                                                                                                          p.height):
        p.hr_resize_x, p.hr_resize_y = p.width, p.height
        p.hr_upscale_to_x, p.hr_upscale_to_y = p.width, p.height
        p.width, p.height = old_hires_fix_first_pass_dimensions(p.width, p.height)
        p.applied_old_hires_behavior_to = (p.width, p.height)

    if p.hr_resize_x == 0 and p.hr_resize_y == 0:
        p.extra_generation_params["Hires upscale"] = p.hr_scale
        p.hr_upscale_to_x = int(p.width * p.hr_scale)
        p.hr_upscale_to_y = int(p.height * p.hr_scale)
        return
    p.extra_generation_params["Hires resize"] = f"{p.hr_resize_x}x{p.hr_resize_y}"
    if p.hr_resize_y == 0:
        p.hr_upscale_to_x = p.hr_resize_x
        p.hr_upscale_to_y = p.hr_resize_x * p.height // p.width
    elif p.hr_resize_x == 0:
        p.hr_upscale_to_x = p.hr_resize_y * p.width // p.height
        p.hr_upscale_to_y = p.hr_resize_y
    else:
        if p.width / p.height < p.hr_resize_x / p.hr_resize_y:
            p.hr_upscale_to_x = p.hr_resize_x
            p.hr_upscale_to_y = p.hr_resize_x * p.height // p.width
        else:
            p.hr_upscale_to_x = p.hr_resize_y * p.width // p.height
            p.hr_upscale_to_y = p.hr_resize_y
        p.truncate_x = (p.hr_upscale_to_x - p.hr_resize_x) // f
        p.truncate_y = (p.hr_upscale_to_y - p.hr_resize_y) // f


def init_hires(p: Any) -> None:
    """Validate the hires settings and note their infotext entries (A1111's ``Txt2Img.init``)."""
    if not p.enable_hr:
        return
    p.extra_generation_params["Denoising strength"] = p.denoising_strength
    if p.hr_checkpoint_name and p.hr_checkpoint_name != "Use same checkpoint":
        log.warning("Hires checkpoint %r ignored: switching models mid-job is not supported.", p.hr_checkpoint_name)
    if p.hr_sampler_name in ("Use same sampler", ""):
        p.hr_sampler_name = None
    if p.hr_sampler_name is not None and p.hr_sampler_name != p.sampler_name:
        p.extra_generation_params["Hires sampler"] = p.hr_sampler_name

    def hr_prompt(p: Any, index: int, prompt_text: str, **_: Any) -> str | None:
        text = p.all_hr_prompts[index]
        return text if text != prompt_text else None

    def hr_negative_prompt(p: Any, index: int, negative_prompt: str, **_: Any) -> str | None:
        text = p.all_hr_negative_prompts[index]
        return text if text != negative_prompt else None

    p.extra_generation_params["Hires prompt"] = hr_prompt
    p.extra_generation_params["Hires negative prompt"] = hr_negative_prompt
    p.extra_generation_params["Hires schedule type"] = None  # set by the sampler when it differs
    if p.hr_scheduler is None or p.hr_scheduler == "Use same scheduler":
        p.hr_scheduler = p.scheduler

    name = p.hr_upscaler if p.hr_upscaler is not None else getattr(p.opts, "hires_fix_default_upscaler",
                                                                      DEFAULT_LATENT_MODE)
    p.latent_scale_mode = latent_upscale_modes.get(name)
    calculate_target_resolution(p)

    state = p.state
    if not state.processing_has_refined_job_count:
        if state.job_count in (-1, 0):
            state.job_count = p.n_iter
        state.job_count *= 2
        state.processing_has_refined_job_count = True
    if p.hr_second_pass_steps:
        p.extra_generation_params["Hires steps"] = p.hr_second_pass_steps
    if p.hr_upscaler is not None:
        p.extra_generation_params["Hires upscaler"] = p.hr_upscaler


def _save_intermediate(p: Any, image: Image.Image, index: int, seeds: list[int], prompts: list[str]) -> None:
    """A1111's ``save_images_before_highres_fix``."""
    if not p.save_samples() or not getattr(p.opts, "save_images_before_highres_fix", False):
        return
    from modules.processing_infotext import create_infotext

    info = create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, [], iteration=p.iteration,
                           position_in_batch=index)
    p.save_image(image, seeds[index], prompts[index], info, suffix="-before-highres-fix")


def _upscale_pixels(p: Any, decoded: Tensor, seeds: list[int], prompts: list[str]) -> Tensor:
    """Decoded first-pass images ([-1, 1]) -> pictures enlarged by the pixel upscaler -> [B, 3, H, W] in 0..1."""
    enlarged = []
    for index, sample in enumerate(torch.clamp((decoded.float() + 1.0) / 2.0, 0.0, 1.0)):
        array = (255.0 * sample.cpu().numpy()).transpose(1, 2, 0).astype(np.uint8)
        picture = Image.fromarray(array)
        _save_intermediate(p, picture, index, seeds, prompts)
        picture = images.resize_image(0, picture, p.hr_upscale_to_x, p.hr_upscale_to_y, upscaler_name=p.hr_upscaler)
        enlarged.append(np.asarray(picture, dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(enlarged)).permute(0, 3, 1, 2)


def sample_hr_pass(p: Any, samples: Tensor, decoded: Tensor | None, seeds: list[int], subseeds: list[int],
                   subseed_strength: float, prompts: list[str]) -> Tensor:
    """The second pass; returns its latents (the first pass's when the job was interrupted or skipped)."""
    from modules import rng
    from modules.processing_img2img import encode_images
    from modules.processing_steps import create_sampler, sample_img2img

    if p.state.interrupted or p.state.skipped:
        return samples
    p.is_hr_pass = True
    try:
        model = p.sd_model
        f = latent_factor(p)
        p.sampler = create_sampler(p, p.hr_sampler_name or p.sampler_name, p.hr_scheduler)
        if p.latent_scale_mode is not None:
            mode = p.latent_scale_mode
            samples = torch.nn.functional.interpolate(
                samples.float(), size=(p.hr_upscale_to_y // f, p.hr_upscale_to_x // f), mode=mode["mode"],
                antialias=mode["antialias"])
            image_conditioning = p.txt2img_image_conditioning(samples, p.hr_upscale_to_x, p.hr_upscale_to_y)
        else:
            if decoded is None:
                decoded = decode_latent_batch(p, samples)
            pixels = _upscale_pixels(p, decoded, seeds, prompts).to(model.device, model.vae_dtype)
            samples = encode_images(p, pixels, seeds)
            image_conditioning = p.img2img_image_conditioning(pixels * 2 - 1, samples)
        p.state.nextjob()

        ty, tx = p.truncate_y, p.truncate_x
        samples = samples[:, :, ty // 2: samples.shape[2] - (ty + 1) // 2, tx // 2: samples.shape[3] - (tx + 1) // 2]
        if image_conditioning is not None:
            image_conditioning = image_conditioning[..., : samples.shape[2], : samples.shape[3]]
        p.rng = rng.ImageRNG(samples.shape[1:], seeds, subseeds=subseeds, subseed_strength=subseed_strength,
                             seed_resize_from_h=p.seed_resize_from_h, seed_resize_from_w=p.seed_resize_from_w,
                             device=model.device, randn_source=getattr(p.opts, "randn_source", "GPU"),
                             eta_noise_seed_delta=int(getattr(p.opts, "eta_noise_seed_delta", 0) or 0))
        noise = p.rng.next().to(samples)

        from modules.processing_prompts import activate_extra_networks

        activate_extra_networks(p, p.hr_extra_network_data)
        p.calculate_hr_conds()
        run_script_hook(p, "before_hr")
        run_script_hook(p, "process_before_every_sampling", x=samples, noise=noise, c=p.hr_c, uc=p.hr_uc)
        return sample_img2img(p, p.sampler, samples, noise, p.hr_c, p.hr_uc, image_conditioning,
                              steps=p.hr_second_pass_steps or p.steps)
    finally:
        p.is_hr_pass = False


def decode_latent_batch(p: Any, samples: Tensor) -> Tensor:
    from modules.processing_run import decode_latent_batch as decode

    return torch.stack(decode(p, samples))
