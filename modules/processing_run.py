"""The main loop both txt2img and img2img run (A1111's ``process_images_inner``) and what happens to its images.

Order per job: seeds → prompts → scripts ``process`` → ``p.init`` → per batch: RNG, ``before_process_batch``, extra
networks, ``process_batch``, conds, ``p.sample``, ``post_sample``, VAE decode, ``postprocess_batch(_list)``, then per
image ``postprocess_image``, mask overlay, save, infotext → grid → ``postprocess``. ``state.interrupted`` stops after
the current batch (whose partly denoised images are kept, as in A1111); ``state.skipped`` moves on to the next batch.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from modules import images, rng
from modules.devices import torch_gc
from modules.processing_hooks import (
    PostprocessBatchListArgs,
    PostprocessImageArgs,
    PostProcessMaskOverlayArgs,
    PostSampleArgs,
    run_script_hook,
)
from modules.processing_infotext import create_infotext, model_name_and_hash
from modules.processing_prompts import activate_extra_networks, deactivate_extra_networks, reload_embeddings

log = logging.getLogger(__name__)

_MISSING = object()


def decode_latent_batch(p: Any, batch: Tensor) -> list[Tensor]:
    """Latents -> images in about [-1, 1], one at a time (peak memory of one image), NaN-safe, on the CPU."""
    from modules.processing_img2img import vae_tile_size

    vae = p.sd_model.vae
    f = vae.config.downscale
    tile = vae_tile_size(p, batch.shape[-1] * f, batch.shape[-2] * f)
    decoded = []
    for i in range(batch.shape[0]):
        with torch.no_grad():
            sample = vae.decode_latent(batch[i: i + 1].to(vae.dtype), tile_size=tile,
                                       nan_fallback=bool(getattr(p.opts, "auto_vae_precision", True)))[0]
        if not torch.isfinite(sample).all():
            log.warning("The VAE produced NaN/inf values; they were replaced by 0. Try the fp32 VAE (--no-half-vae).")
            sample = torch.nan_to_num(sample, nan=0.0, posinf=1.0, neginf=-1.0)
        decoded.append(sample.float().cpu())
    return decoded


def to_pil(sample: Tensor) -> Image.Image:
    """[3, H, W] in 0..1 -> RGB picture (A1111 truncates, it does not round)."""
    array = (255.0 * sample.cpu().numpy()).transpose(1, 2, 0).astype(np.uint8)
    return Image.fromarray(array)


def _batch_slice(values: list, n: int, batch_size: int) -> list:
    return values[n * batch_size: (n + 1) * batch_size]


def _setup_job(p: Any) -> None:
    """Seeds, defaults from settings, model facts and prompts, before the scripts' ``process`` hook."""
    if isinstance(p.prompt, list):
        if len(p.prompt) == 0:
            raise ValueError("the prompt list is empty")
    elif p.prompt is None:
        raise ValueError("the prompt is missing")
    seed = rng.get_fixed_seed(p.seed) if not isinstance(p.seed, list) else p.seed
    subseed = rng.get_fixed_seed(p.subseed) if not isinstance(p.subseed, list) else p.subseed
    opts = p.opts
    if p.restore_faces is None:
        p.restore_faces = bool(getattr(opts, "face_restoration", False))
    if p.restore_faces:
        p.comment("Face restoration is not available; the images were not changed.")
        p.restore_faces = False
    if p.tiling is None:
        p.tiling = bool(getattr(opts, "tiling", False))
    paths = getattr(p, "paths", None)
    p.sd_model_name, p.sd_model_hash = model_name_and_hash(p.sd_model, getattr(paths, "cache_file", None))
    extras = p.sd_model.extras
    p.sd_vae_name, p.sd_vae_hash = extras.get("vae_name"), extras.get("vae_hash")
    p.fill_fields_from_opts()
    p.setup_prompts()
    count = len(p.all_prompts)
    p.all_seeds = list(seed) if isinstance(seed, list) else [
        int(seed) + (i if p.subseed_strength == 0 else 0) for i in range(count)]
    p.all_subseeds = list(subseed) if isinstance(subseed, list) else [int(subseed) + i for i in range(count)]
    reload_embeddings(p)


def _write_params_txt(p: Any) -> None:
    """A1111 keeps the first image's infotext in ``<data>/params.txt`` ("last prompt" for the UI's paste button)."""
    data_dir = getattr(getattr(p, "paths", None), "data_dir", None)
    if data_dir is None or not getattr(p, "save_params_txt", True):
        return
    try:
        with open(os.path.join(data_dir, "params.txt"), "w", encoding="utf8") as file:
            file.write(create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, [], 0, 0))
    except OSError as e:
        log.warning("Could not write params.txt: %s", e)


def _run_batch(p: Any, n: int) -> list[Tensor] | None:
    """Sample and decode batch ``n``; None when there is nothing to do."""
    state = p.state
    bs = p.batch_size
    p.prompts = _batch_slice(p.all_prompts, n, bs)
    p.negative_prompts = _batch_slice(p.all_negative_prompts, n, bs)
    p.seeds = _batch_slice(p.all_seeds, n, bs)
    p.subseeds = _batch_slice(p.all_subseeds, n, bs)
    model = p.sd_model
    f = model.vae.config.downscale
    p.rng = rng.ImageRNG((model.config.unet.out_channels, p.height // f, p.width // f), p.seeds,
                         subseeds=p.subseeds, subseed_strength=p.subseed_strength,
                         seed_resize_from_h=p.seed_resize_from_h, seed_resize_from_w=p.seed_resize_from_w,
                         device=model.device, randn_source=getattr(p.opts, "randn_source", "GPU"),
                         eta_noise_seed_delta=int(getattr(p.opts, "eta_noise_seed_delta", 0) or 0))
    run_script_hook(p, "before_process_batch", batch_number=n, prompts=p.prompts, seeds=p.seeds,
                    subseeds=p.subseeds)
    if len(p.prompts) == 0:
        return None
    p.parse_extra_network_prompts()
    activate_extra_networks(p, p.extra_network_data)
    run_script_hook(p, "process_batch", batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
    p.setup_conds()
    if n == 0:
        _write_params_txt(p)
    if p.n_iter > 1:
        state.job = f"Batch {n + 1} out of {p.n_iter}"

    samples = p.sample(conditioning=p.c, unconditional_conditioning=p.uc, seeds=p.seeds, subseeds=p.subseeds,
                       subseed_strength=p.subseed_strength, prompts=p.prompts)
    post = PostSampleArgs(samples)
    run_script_hook(p, "post_sample", post)
    samples = post.samples
    if getattr(samples, "already_decoded", False):
        decoded = list(samples)
    else:
        decoded = decode_latent_batch(p, samples)
    del samples
    x_samples = torch.clamp((torch.stack(decoded).float() + 1.0) / 2.0, 0.0, 1.0)
    state.nextjob()
    if p.scripts is not None:
        run_script_hook(p, "postprocess_batch", x_samples, batch_number=n)
        p.prompts = _batch_slice(p.all_prompts, n, bs)
        p.negative_prompts = _batch_slice(p.all_negative_prompts, n, bs)
        batch_params = PostprocessBatchListArgs(list(x_samples))
        run_script_hook(p, "postprocess_batch_list", batch_params, batch_number=n)
        return list(batch_params.images)
    return list(x_samples)


def _finish_image(p: Any, i: int, sample: Tensor, save: bool) -> tuple[Image.Image, str]:
    """Picture, script hooks, mask overlay, save; returns (picture, infotext)."""
    opts = p.opts
    p.batch_index = i
    image = sample if isinstance(sample, Image.Image) else to_pil(sample)
    pp = PostprocessImageArgs(image)
    run_script_hook(p, "postprocess_image", pp)
    image = pp.image

    mask_for_overlay = getattr(p, "mask_for_overlay", None)
    overlays = getattr(p, "overlay_images", None)
    overlay = overlays[i] if getattr(opts, "overlay_inpaint", True) and overlays and i < len(overlays) else None
    if p.scripts is not None:
        ppmo = PostProcessMaskOverlayArgs(i, mask_for_overlay, overlay)
        run_script_hook(p, "postprocess_maskoverlay", ppmo)
        mask_for_overlay, overlay = ppmo.mask_for_overlay, ppmo.overlay_image
    if overlay is not None:
        from modules.masking import apply_overlay

        image = apply_overlay(image, p.paste_to, overlay)
    pp = PostprocessImageArgs(image)
    run_script_hook(p, "postprocess_image_after_composite", pp)
    image = pp.image

    text = create_infotext(p, p.prompts, p.seeds, p.subseeds, index=i, all_negative_prompts=p.negative_prompts)
    if save:
        p.save_image(image, p.seeds[i], p.prompts[i], text)
    if getattr(opts, "enable_pnginfo", True):
        image.info["parameters"] = text
    return image, text


def _grid(p: Any, output_images: list, infotexts: list[str]) -> int:
    """Add (and save) the grid of a multi-image job; returns the index of the first non-grid image."""
    opts = p.opts
    if len(output_images) < 2 and getattr(opts, "grid_only_if_multiple", True):
        return 0
    return_grid = getattr(opts, "return_grid", True)
    grid_save = getattr(opts, "grid_save", True)
    if not (return_grid or grid_save) or p.do_not_save_grid:
        return 0
    grid = images.image_grid(output_images, p.batch_size, opts=opts)
    text = create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, use_main_prompt=True,
                           all_negative_prompts=p.all_negative_prompts)
    first = 0
    if return_grid:
        infotexts.insert(0, text)
        if getattr(opts, "enable_pnginfo", True):
            grid.info["parameters"] = text
        output_images.insert(0, grid)
        first = 1
    if grid_save:
        p.save_image(grid, p.all_seeds[0], p.all_prompts[0], text, grid=True)
    return first


def process_images_inner(p: Any) -> Any:
    """Generate every image of ``p`` and return a :class:`~modules.processing.Processed`."""
    from modules.processing_result import Processed
    from modules.sd.tiling import set_tiling

    state = p.state
    _setup_job(p)
    run_script_hook(p, "process")
    infotexts: list[str] = []
    output_images: list[Image.Image] = []
    model = p.sd_model
    set_tiling(model.unet, bool(p.tiling))
    set_tiling(model.vae, bool(p.tiling))
    try:
        with torch.no_grad():
            p.init(p.all_prompts, p.all_seeds, p.all_subseeds)
            if state.job_count in (-1, 0):
                state.job_count = p.n_iter
            for n in range(p.n_iter):
                p.iteration = n
                if state.skipped:
                    state.skipped = False
                if state.interrupted or state.stopping_generation:
                    break
                x_samples = _run_batch(p, n)
                if x_samples is None:
                    break
                save = p.save_samples()
                for i, sample in enumerate(x_samples):
                    image, text = _finish_image(p, i, sample, save)
                    infotexts.append(text)
                    output_images.append(image)
            if not infotexts and p.all_prompts:
                infotexts.append(create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, [], 0, 0))
            index_of_first_image = _grid(p, output_images, infotexts)
    finally:
        if p.tiling:
            set_tiling(model.unet, False)
            set_tiling(model.vae, False)
    deactivate_extra_networks(p, p.extra_network_data)
    if model.device.type == "cuda":
        torch_gc()
    res = Processed(p, images_list=output_images, seed=p.all_seeds[0], info=infotexts[0] if infotexts else "",
                    subseed=p.all_subseeds[0], index_of_first_image=index_of_first_image, infotexts=infotexts)
    run_script_hook(p, "postprocess", res)
    return res


# --- settings overrides ----------------------------------------------------------------------------------------------

def fix_sampler_and_scheduler(p: Any) -> None:
    """A1111's ``fix_p_invalid_sampler_and_scheduler``: unknown names become the defaults (with a warning)."""
    from modules.sd_samplers import get_sampler_and_scheduler

    before = (p.sampler_name, p.scheduler)
    p.sampler_name, p.scheduler = get_sampler_and_scheduler(p.sampler_name, p.scheduler, convert_automatic=False)
    if before[0] != p.sampler_name or before[1] not in (None, p.scheduler):
        log.warning('Sampler/scheduler autocorrection: "%s" -> "%s", "%s" -> "%s"', before[0], p.sampler_name,
                    before[1], p.scheduler)


def apply_override_settings(p: Any) -> dict[str, Any]:
    """Apply ``p.override_settings`` to ``p.opts``; returns the previous raw values for restoring."""
    from modules.options import SettingsError

    opts = p.opts
    stored: dict[str, Any] = {}
    for key, value in p.override_settings.items():
        if key in ("sd_model_checkpoint", "sd_vae"):
            log.debug("override of %s is handled by the job queue, not by processing", key)
            continue
        stored[key] = opts.data.get(key, _MISSING)
        try:
            if key in opts.data_labels:
                opts.set(key, value, is_api=True, run_callbacks=False)
            else:
                opts.data[key] = value
        except SettingsError as e:
            log.warning("override_settings: %s", e)
    return stored


def restore_settings(p: Any, stored: dict[str, Any]) -> None:
    for key, value in stored.items():
        if value is _MISSING:
            p.opts.data.pop(key, None)
        else:
            p.opts.data[key] = value
