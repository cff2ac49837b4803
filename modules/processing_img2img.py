"""img2img and inpainting for a processing job: A1111's ``StableDiffusionProcessingImg2Img.init`` and ``sample``.

``init`` prepares pictures and masks once per job (``modules.masking.prepare_inpainting``: mask → blur → "Only masked"
crop or resize → overlays → fill), encodes the init images, and builds the latent mask and, for 9-channel inpainting
models, the image conditioning. ``sample`` noises the init latent to the denoising strength, samples, and blends the
unmasked area back; ``apply_overlay`` later restores the original pixels outside the mask exactly.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from modules import images, masking
from modules.processing_hooks import MaskBlendArgs, run_script_hook
from modules.sd.vae import DiagonalGaussian

log = logging.getLogger(__name__)

TILED_VAE_PIXELS = 1536 * 1536
"""Above this many pixels per image the VAE runs in tiles (memory grows with the tile, not the picture)."""
VAE_TILE_SIZE = 768


def vae_tile_size(p: Any, width: int, height: int) -> int | None:
    threshold = int(getattr(p.opts, "vae_tiled_pixels", TILED_VAE_PIXELS) or 0)
    return VAE_TILE_SIZE if threshold and width * height > threshold else None


def images_to_tensor(pictures: list[Image.Image], device: torch.device, dtype: torch.dtype) -> Tensor:
    """RGB pictures -> [B, 3, H, W] in 0..1."""
    arrays = [np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0 for picture in pictures]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(device=device, dtype=dtype)


def encode_images(p: Any, pixels: Tensor, seeds: list[int], rows: int | None = None) -> Tensor:
    """[B, 3, H, W] in 0..1 -> float32 latents, `rows` of them (B == 1 is broadcast).

    Row i's posterior sample uses a generator seeded with ``seeds[i]`` (the image's own seed), so an image does not
    depend on its batch size or position, as in txt2img.
    """
    vae = p.sd_model.vae
    tile = vae_tile_size(p, pixels.shape[-1], pixels.shape[-2])
    scaled = pixels.to(vae.dtype) * 2 - 1
    with torch.no_grad():
        moments = vae.encode_moments(scaled) if tile is None else vae.tiled_encode_moments(scaled, tile)
    posterior = DiagonalGaussian(moments.float())
    rows = rows or posterior.mean.shape[0]
    mean, std = (t.expand(rows, -1, -1, -1) if t.shape[0] == 1 else t for t in (posterior.mean, posterior.std))
    noise = torch.stack([
        torch.randn(mean.shape[1:], generator=torch.Generator("cpu").manual_seed(int(seeds[i % len(seeds)])))
        for i in range(rows)
    ]).to(mean.device)
    return (mean + std * noise) * vae.config.scale_factor


def _maybe_save_init_image(p: Any, image: Image.Image) -> None:
    """A1111's ``save_init_img``: keep the init image under its md5 in ``outdir_init_images``."""
    if not getattr(p.opts, "save_init_img", False):
        return
    p.init_img_hash = hashlib.md5(image.tobytes()).hexdigest()
    folder = p.resolve_output_dir(getattr(p.opts, "outdir_init_images", "outputs/init-images"))
    images.save_image(image, str(folder), "", forced_filename=p.init_img_hash, save_to_dirs=False,
                      existing_info=image.info, opts=p.opts)


def init_img2img(p: Any, all_prompts: list[str], all_seeds: list[int], all_subseeds: list[int]) -> None:
    """Prepare pictures, masks, the init latent and the image conditioning (once per job)."""
    from modules.processing_steps import create_sampler

    p.extra_generation_params["Denoising strength"] = p.denoising_strength
    p.image_cfg_scale = None  # only instruct-pix2pix ("edit") models use it; none are supported
    p.sampler = create_sampler(p, p.sampler_name, p.scheduler)

    background = getattr(p.opts, "img2img_background_color", "#ffffff")
    pictures = []
    for picture in p.init_images:
        _maybe_save_init_image(p, picture)
        pictures.append(images.flatten(picture, background))
    setup = masking.prepare_inpainting(
        pictures, p.image_mask, p.width, p.height, resize_mode=p.resize_mode, invert=bool(p.inpainting_mask_invert),
        blur_x=p.mask_blur_x, blur_y=p.mask_blur_y, round_mask=p.mask_round, only_masked=bool(p.inpaint_full_res),
        padding=p.inpaint_full_res_padding, fill_mode=p.inpainting_fill, latent_mask=p.latent_mask)
    p.extra_generation_params.update(setup.extra_generation_params)
    for comment in setup.comments:
        p.comment(comment)
    if setup.comments and setup.crop_region is None:
        p.inpaint_full_res = False
    p.paste_to = setup.paste_loc
    p.overlay_images = list(setup.overlays) if setup.overlays else None
    if setup.overlays:
        p.mask_for_overlay = ImageOps.invert(setup.overlays[0].getchannel("A"))

    count = len(setup.images)
    if count == 1:
        unique = setup.images
        if p.overlay_images is not None:
            p.overlay_images = p.overlay_images * p.batch_size
    elif count <= p.batch_size:
        p.batch_size = count
        unique = setup.images
    else:
        raise RuntimeError(f"bad number of images passed: {count}; expecting {p.batch_size} or less")

    model = p.sd_model
    pixels = images_to_tensor(unique, model.device, model.vae_dtype)
    latent = encode_images(p, pixels, all_seeds, rows=p.batch_size)
    if count == 1:
        pixels = pixels.expand(p.batch_size, -1, -1, -1)
    factor = model.vae.config.downscale
    if p.resize_mode == 3:
        latent = torch.nn.functional.interpolate(latent, size=(p.height // factor, p.width // factor),
                                                 mode="bilinear")

    p.mask = p.nmask = None
    if setup.latent_mask is not None:
        mask, nmask = masking.latent_mask_from(setup.latent_mask, latent.shape[2], latent.shape[3],
                                               round_mask=p.mask_round, channels=latent.shape[1],
                                               device=latent.device, dtype=latent.dtype)
        p.mask, p.nmask = mask, nmask
        if p.inpainting_fill == masking.LATENT_NOISE:
            from modules.processing import create_random_tensors

            noise = create_random_tensors(latent.shape[1:], all_seeds[: latent.shape[0]], p=p)
            latent = masking.masked_content_latent(latent, mask, masking.LATENT_NOISE, noise.to(latent))
        elif p.inpainting_fill == masking.LATENT_NOTHING:
            latent = masking.masked_content_latent(latent, mask, masking.LATENT_NOTHING)
    p.init_latent = latent
    p.image_conditioning = p.img2img_image_conditioning(pixels * 2 - 1, latent, setup.latent_mask, p.mask_round)


def sample_img2img(p: Any, conditioning: Any, unconditional_conditioning: Any) -> Tensor:
    """Sample one batch from ``p.init_latent`` and blend the unmasked area back in."""
    from modules.processing_steps import sample_img2img as run_img2img

    x = p.rng.next()
    if p.initial_noise_multiplier != 1.0:
        p.extra_generation_params["Noise multiplier"] = p.initial_noise_multiplier
        x = x * p.initial_noise_multiplier
    init_latent = p.init_latent
    if init_latent.shape[0] != x.shape[0]:  # a later batch of a job whose last batch is smaller
        init_latent = init_latent[: x.shape[0]]
    run_script_hook(p, "process_before_every_sampling", x=init_latent, noise=x, c=conditioning,
                    uc=unconditional_conditioning)
    image_cond = p.image_conditioning
    if image_cond is not None and image_cond.shape[0] != x.shape[0]:
        image_cond = image_cond[: x.shape[0]]
    samples = run_img2img(p, p.sampler, init_latent, x.to(init_latent), conditioning, unconditional_conditioning,
                          image_cond)
    if p.mask is not None:
        blended = samples * p.nmask + init_latent * p.mask
        args = MaskBlendArgs(samples, p.nmask, init_latent, p.mask, blended)
        run_script_hook(p, "on_mask_blend", args)
        samples = args.blended_latent
    return samples


def image_conditioning(p: Any, source_image: Tensor, latent_image: Tensor, image_mask: Any = None,
                       round_image_mask: bool = True) -> Tensor | None:
    """The 9-channel inpainting models' extra input (mask + masked-image latent); None for ordinary models."""
    if p.sd_model.config.unet.in_channels != 9:
        return None
    p.is_using_inpainting_conditioning = True
    seeds = list(p.all_seeds) or [0]

    def encode(pixels: Tensor) -> Tensor:  # pixels in -1..1; per-image seeded posterior samples
        return encode_images(p, (pixels + 1) / 2, seeds)

    weight = float(getattr(p, "inpainting_mask_weight", getattr(p.opts, "inpainting_mask_weight", 1.0)))
    cond = masking.inpainting_image_conditioning(encode, source_image.float(), image_mask, mask_weight=weight,
                                                 round_mask=round_image_mask,
                                                 latent_size=tuple(latent_image.shape[-2:]))
    return cond.float()


def txt2img_conditioning(p: Any, x: Tensor, width: int, height: int) -> Tensor | None:
    """What an inpainting model sees in txt2img (everything masked); None for ordinary models."""
    if p.sd_model.config.unet.in_channels != 9:
        return None
    p.is_using_inpainting_conditioning = True
    vae = p.sd_model.vae

    def encode(pixels: Tensor) -> Tensor:
        with torch.no_grad():
            return vae.encode_to_latent(pixels.to(vae.dtype), sample=False)

    cond = masking.txt2img_inpainting_conditioning(encode, 1, height, width, device=x.device, dtype=torch.float32)
    return cond.float().expand(x.shape[0], -1, -1, -1)
