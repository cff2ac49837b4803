"""Inpainting for img2img, as A1111 does it: mask preparation, "Only masked" cropping, masked-content fill, pasting
the result back, and the latent-space mask and 9-channel conditioning.

Why pure functions: the img2img pipeline calls them in a fixed order (see `prepare_inpainting`) and tests can check
each one on small images without a model. The one promise that matters most to users: after `apply_overlay`, pixels
outside the (blurred) mask are the original pixels, whatever the sampler produced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps
from torch import Tensor

from modules.images import resize_image

CropRegion = tuple[int, int, int, int]
"""(x1, y1, x2, y2), right/bottom exclusive, like PIL boxes."""

PasteLoc = tuple[int, int, int, int]
"""(x, y, width, height) where a generated crop goes back into the full picture."""

FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING = 0, 1, 2, 3
"""A1111's `inpainting_fill` values ("Masked content")."""

MASKED_CONTENT_NAMES = {
    FILL: "fill", ORIGINAL: "original", LATENT_NOISE: "latent noise", LATENT_NOTHING: "latent nothing",
}

_FILL_LAYERS = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))
"""(blur radius, times composited) for `fill`, coarse to fine."""


def binary_mask(mask_image: Image.Image, *, round_mask: bool = True) -> Image.Image:
    """The mask as mode "L". An RGBA mask that is not fully opaque means its alpha (thresholded at 128 if rounding),
    which is how the browser's sketch canvas sends a painted mask."""
    if mask_image.mode == "RGBA" and mask_image.getextrema()[-1] != (255, 255):
        alpha = mask_image.getchannel("A")
        return alpha.point(lambda v: 255 if v > 128 else 0) if round_mask else alpha
    return mask_image.convert("L")


def _blur_kernel_size(sigma: int) -> int:
    """A1111's odd kernel width for a mask blur of `sigma` pixels (about 2.5 sigma each side)."""
    return 2 * int(2.5 * sigma + 0.5) + 1


def prepare_mask(mask_image: Image.Image, *, invert: bool = False, blur_x: int = 4, blur_y: int = 4,
                 round_mask: bool = True) -> Image.Image:
    """The user's mask as an "L" image ready for img2img: binarised, optionally inverted ("Inpaint not masked"),
    then Gaussian-blurred separately along x and y exactly as A1111 does (OpenCV, reflect-101 borders)."""
    mask = binary_mask(mask_image, round_mask=round_mask)
    if invert:
        mask = ImageOps.invert(mask)
    if blur_x > 0:
        k = _blur_kernel_size(blur_x)
        mask = Image.fromarray(cv2.GaussianBlur(np.array(mask), (k, 1), blur_x))
    if blur_y > 0:
        k = _blur_kernel_size(blur_y)
        mask = Image.fromarray(cv2.GaussianBlur(np.array(mask), (1, k), blur_y))
    return mask


def get_crop_region(mask: np.ndarray | Image.Image, pad: int = 0) -> CropRegion | None:
    """Bounding box of the mask's non-zero pixels grown by `pad` and clipped to the picture; None if the mask is
    empty (A1111's `get_crop_region_v2`)."""
    image = mask if isinstance(mask, Image.Image) else Image.fromarray(np.asarray(mask))
    box = image.getbbox()
    if not box:
        return None
    x1, y1, x2, y2 = box
    if not pad:
        return box
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, image.width), min(y2 + pad, image.height)


def expand_crop_region(crop_region: CropRegion, processing_width: int, processing_height: int, image_width: int,
                       image_height: int) -> CropRegion:
    """Grow the crop box along one axis to the processing aspect ratio, shifting it back inside the picture, so the
    crop is not distorted when resized to width x height (A1111's `expand_crop_region`)."""
    x1, y1, x2, y2 = crop_region
    ratio = processing_width / processing_height
    if (x2 - x1) / (y2 - y1) > ratio:
        y1, y2 = _grow_span(y1, y2, int((x2 - x1) / ratio - (y2 - y1)), image_height)
    else:
        x1, x2 = _grow_span(x1, x2, int((y2 - y1) * ratio - (x2 - x1)), image_width)
    return x1, y1, x2, y2


def _grow_span(start: int, end: int, grow: int, limit: int) -> tuple[int, int]:
    """Widen [start, end) by `grow` split evenly, then slide it back inside [0, limit] (clipping if still too big)."""
    start -= grow // 2
    end += grow - grow // 2
    if end >= limit:
        start -= end - limit
        end = limit
    if start < 0:
        end -= start
        start = 0
    return start, min(end, limit)


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill" masked content: the masked area painted with ever finer blurs of the unmasked colours, so the
    sampler starts from plausible surrounding colours instead of what was there. Unmasked pixels stay as they were."""
    keep = ImageOps.invert(mask.convert("L"))
    if keep.size != image.size:
        keep = keep.resize(image.size, resample=Image.Resampling.LANCZOS)
    visible = Image.new("RGBa", image.size)
    visible.paste(image.convert("RGBA").convert("RGBa"), mask=keep)
    result = Image.new("RGBA", image.size)
    for radius, repeats in _FILL_LAYERS:
        layer = visible.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            result.alpha_composite(layer)
    return result.convert("RGB")


def overlay_mask(mask: Image.Image, *, only_masked: bool) -> Image.Image:
    """The mask that decides what gets pasted back. For the whole picture A1111 doubles the blurred mask, so the
    generated pixels show fully from the blur's midpoint inward; "Only masked" uses the blurred mask as is."""
    mask = mask.convert("L")
    if only_masked:
        return mask
    doubled = np.clip(np.array(mask).astype(np.float32) * 2, 0, 255).astype(np.uint8)
    return Image.fromarray(doubled)


def create_overlay(image: Image.Image, mask: Image.Image, crop_region: CropRegion | None = None) -> Image.Image:
    """An RGBA copy of the original whose alpha is the inverted mask: composited over the result it restores every
    pixel outside the mask. `mask` is the blurred mask at the image's size; with `crop_region` None (whole picture)
    it is doubled first, as A1111 does, while "Only masked" (a crop region given) uses it unchanged."""
    return _overlay_with_mask(image, overlay_mask(mask, only_masked=crop_region is not None))


def _overlay_with_mask(image: Image.Image, mask: Image.Image) -> Image.Image:
    """`image` with alpha 255 - mask, built premultiplied so partly masked pixels keep their exact colour."""
    if mask.size != image.size:
        mask = mask.resize(image.size, resample=Image.Resampling.LANCZOS)
    overlay = Image.new("RGBa", image.size)
    overlay.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    return overlay.convert("RGBA")


def uncrop(image: Image.Image, dest_size: tuple[int, int], paste_loc: PasteLoc) -> Image.Image:
    """The generated crop resized back to its box and placed on a transparent canvas of the full picture's size."""
    x, y, w, h = paste_loc
    canvas = Image.new("RGBA", dest_size)
    canvas.paste(resize_image(1, image, w, h), (x, y))
    return canvas


def apply_overlay(image: Image.Image, paste_loc: PasteLoc | None, overlay: Image.Image | None) -> Image.Image:
    """The final picture: the generated `image` (uncropped into place for "Only masked") under the original's
    overlay, so only the masked area changes."""
    if overlay is None:
        return image.copy()
    if paste_loc is not None:
        image = uncrop(image, overlay.size, paste_loc)
    elif image.size != overlay.size:
        image = image.resize(overlay.size, resample=Image.Resampling.LANCZOS)
    composed = image.convert("RGBA")
    composed.alpha_composite(overlay)
    return composed.convert("RGB")


@dataclass
class InpaintSetup:
    """What img2img needs from the mask: the pictures to encode, the mask for latents, and how to paste back."""

    images: list[Image.Image]
    """Init images at width x height (cropped to the mask for "Only masked", colour-filled when asked)."""
    latent_mask: Image.Image | None
    """The width x height "L" mask for `latent_mask_from` and the inpainting-model conditioning; None = no mask."""
    overlays: list[Image.Image] = field(default_factory=list)
    """One RGBA overlay per init image, at that image's pasted-back size."""
    paste_loc: PasteLoc | None = None
    crop_region: CropRegion | None = None
    extra_generation_params: dict[str, object] = field(default_factory=dict)
    """Infotext entries A1111 writes for these settings."""
    comments: list[str] = field(default_factory=list)


def prepare_inpainting(init_images: Sequence[Image.Image], mask_image: Image.Image | None, width: int, height: int,
                       *, resize_mode: int = 0, invert: bool = False, blur_x: int = 4, blur_y: int = 4,
                       round_mask: bool = True, only_masked: bool = True, padding: int = 0, fill_mode: int = FILL,
                       latent_mask: Image.Image | None = None) -> InpaintSetup:
    """A1111's img2img image/mask set-up, in its order: mask → blur → crop ("Only masked") or resize → overlays →
    crop/resize the init images → fill. Defaults are those of A1111's processing class (and so its API).
    `init_images` should already be flattened to RGB. A blank mask with "Only masked" falls back to plain img2img,
    as in A1111; without a mask the images are only resized."""
    extra: dict[str, object] = {}
    comments: list[str] = []
    crop_region = paste_loc = None
    mask_for_overlay = mask = None
    if mask_image is not None:
        mask = prepare_mask(mask_image, invert=invert, blur_x=blur_x, blur_y=blur_y, round_mask=round_mask)
        if invert:
            extra["Mask mode"] = "Inpaint not masked"
        if (blur_x > 0 or blur_y > 0) and blur_x == blur_y:
            extra["Mask blur"] = blur_x
        if only_masked:
            crop_region = get_crop_region(mask, padding)
            if crop_region is not None:
                mask_for_overlay = mask
                crop_region = expand_crop_region(crop_region, width, height, mask.width, mask.height)
                x1, y1, x2, y2 = crop_region
                paste_loc = (x1, y1, x2 - x1, y2 - y1)
                mask = resize_image(2, mask.crop(crop_region), width, height).convert("L")
                extra["Inpaint area"] = "Only masked"
                extra["Masked area padding"] = padding
            else:
                mask = None
                comments.append('Unable to perform "Inpaint Only mask" because mask is blank, switch to img2img mode.')
        else:
            mask = resize_image(resize_mode, mask, width, height).convert("L")
            mask_for_overlay = overlay_mask(mask, only_masked=False)
    lat_mask = latent_mask if latent_mask is not None else mask

    images: list[Image.Image] = []
    overlays: list[Image.Image] = []
    for init in init_images:
        image = init.convert("RGB")
        if crop_region is None and resize_mode != 3:
            image = resize_image(resize_mode, image, width, height)
        if mask is not None and mask_for_overlay is not None:
            overlays.append(_overlay_with_mask(image, mask_for_overlay))
        if crop_region is not None:
            image = resize_image(2, image.crop(crop_region), width, height)
        if mask is not None and fill_mode != ORIGINAL:
            image = fill(image, lat_mask)
            if fill_mode == FILL:
                extra["Masked content"] = "fill"
        images.append(image)
    if mask is not None and fill_mode in (LATENT_NOISE, LATENT_NOTHING):
        extra["Masked content"] = MASKED_CONTENT_NAMES[fill_mode]
    return InpaintSetup(images, lat_mask if mask is not None else None, overlays, paste_loc, crop_region, extra,
                        comments)


# --- latent space ----------------------------------------------------------------------------------------------


def latent_mask_from(mask_image: Image.Image, latent_h: int, latent_w: int, *, round_mask: bool = True,
                     channels: int = 4, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """(mask, nmask), each (channels, latent_h, latent_w): `mask` is 1 where the original latent is kept, `nmask`
    = 1 - mask where the sampler paints. Downscaled bicubically (PIL's default, as A1111) and rounded to 0/1 unless
    `round_mask` is off (then soft edges blend)."""
    small = mask_image.convert("L").resize((latent_w, latent_h), resample=Image.Resampling.BICUBIC)
    painted = np.asarray(small, dtype=np.float32) / 255.0
    if round_mask:
        painted = np.around(painted)
    painted_t = torch.from_numpy(np.ascontiguousarray(painted))[None].expand(channels, -1, -1)
    nmask = painted_t.to(device=device, dtype=dtype).contiguous()
    return 1.0 - nmask, nmask


def masked_content_latent(init_latent: Tensor, mask: Tensor, mode: int, noise: Tensor | None = None) -> Tensor:
    """The init latent with its masked area replaced for "latent noise" (2: seed noise) or "latent nothing"
    (3: zeros); "fill" (0) and "original" (1) act on pixels, so the latent comes back unchanged."""
    if mode == LATENT_NOISE:
        if noise is None:
            raise ValueError("masked content 'latent noise' needs a noise tensor")
        return init_latent * mask + noise.to(init_latent) * (1.0 - mask)
    if mode == LATENT_NOTHING:
        return init_latent * mask
    return init_latent


def apply_latent_mask(x: Tensor, init_latent: Tensor, mask: Tensor, nmask: Tensor) -> Tensor:
    """Keep the original latent outside the mask; A1111 does this after every step and once at the end."""
    return init_latent * mask + nmask * x


def _conditioning_mask(mask: Image.Image | Tensor | None, image: Tensor, round_mask: bool) -> Tensor:
    if mask is None:
        return image.new_ones(1, 1, *image.shape[-2:])
    if isinstance(mask, Tensor):
        return mask.to(device=image.device, dtype=image.dtype)
    array = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(np.ascontiguousarray(array))[None, None]
    if round_mask:
        tensor = torch.round(tensor)
    return tensor.to(device=image.device, dtype=image.dtype)


def inpainting_image_conditioning(vae_encode_fn: Callable[[Tensor], Tensor], image: Tensor,
                                  mask: Image.Image | Tensor | None, *, mask_weight: float = 1.0,
                                  round_mask: bool = True, latent_size: tuple[int, int] | None = None) -> Tensor:
    """The 5 extra input channels of an inpainting UNet (9-channel models): the mask at latent size, then the
    latent of the image with the masked area blanked out.

    `image` is (B, 3, H, W) in [-1, 1]; `vae_encode_fn` returns the scaled latent. `mask_weight` is A1111's
    `inpainting_mask_weight`: 1 blanks the masked area fully, 0 keeps the whole image visible to the model.
    """
    cond_mask = _conditioning_mask(mask, image, round_mask)
    masked_image = torch.lerp(image, image * (1.0 - cond_mask), mask_weight)
    latent = vae_encode_fn(masked_image)
    size = latent_size or tuple(latent.shape[-2:])
    cond_mask = torch.nn.functional.interpolate(cond_mask, size=size)
    cond_mask = cond_mask.expand(latent.shape[0], -1, -1, -1).to(device=latent.device, dtype=latent.dtype)
    return torch.cat([cond_mask, latent], dim=1)


def txt2img_inpainting_conditioning(vae_encode_fn: Callable[[Tensor], Tensor], batch_size: int, height: int,
                                    width: int, *, device: torch.device | str = "cpu",
                                    dtype: torch.dtype = torch.float32) -> Tensor:
    """What an inpainting model gets in txt2img: everything masked, over the latent of a mid-grey picture."""
    grey = torch.zeros(batch_size, 3, height, width, device=device, dtype=dtype)  # 0.5 in [0, 1] is 0 in [-1, 1]
    latent = vae_encode_fn(grey)
    return torch.nn.functional.pad(latent, (0, 0, 0, 0, 1, 0), value=1.0)
