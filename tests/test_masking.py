"""Tests for modules/masking.py: A1111's inpainting mask handling, fill, paste-back and latent-space pieces.

The acceptance tests simulate img2img with a fake "generator" that inverts every pixel: after pasting back, every
pixel outside the blurred mask must be the original (within 1/255), for the whole picture and for "Only masked".
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from modules import masking


def gradient_image(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def box_mask(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, box)
    return mask


def reference_blur_1d(row: np.ndarray, sigma: float) -> np.ndarray:
    """Independent separable Gaussian: A1111's kernel width, reflect-101 borders, float maths."""
    radius = int(2.5 * sigma + 0.5)
    taps = np.exp(-((np.arange(-radius, radius + 1)) ** 2) / (2 * sigma * sigma))
    taps /= taps.sum()
    padded = np.pad(row.astype(np.float64), radius, mode="reflect")
    return np.convolve(padded, taps, mode="valid")


def test_prepare_mask_blurs_x_and_y_separately_like_a1111() -> None:
    mask = box_mask(64, 48, (20, 10, 40, 30))
    only_x = np.array(masking.prepare_mask(mask, blur_x=4, blur_y=0)).astype(int)
    # Rows outside the box stay empty: the x blur does not spread vertically.
    assert only_x[:10].max() == 0 and only_x[30:].max() == 0
    expected = reference_blur_1d(np.array(mask)[20], 4)
    assert np.abs(only_x[20] - expected).max() <= 1
    # Kernel 2*int(2.5*4+0.5)+1 = 21 taps: reaches exactly 10 px beyond the box.
    assert only_x[20, 10] > 0 and only_x[20, 9] == 0 and only_x[20, 49] > 0 and only_x[20, 50] == 0

    both = np.array(masking.prepare_mask(mask, blur_x=3, blur_y=6)).astype(int)
    ref_x = np.stack([reference_blur_1d(r, 3) for r in np.array(mask)])
    ref = np.stack([reference_blur_1d(c, 6) for c in np.round(ref_x).T]).T
    assert np.abs(both - ref).max() <= 2  # OpenCV's 8-bit fixed-point maths vs float
    unblurred = masking.prepare_mask(mask, blur_x=0, blur_y=0)
    assert np.array_equal(np.array(unblurred), np.array(mask))


def test_prepare_mask_rgba_alpha_and_invert() -> None:
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    rgba.paste((255, 255, 255, 100), (0, 0, 8, 16))
    rgba.paste((255, 255, 255, 200), (8, 0, 16, 16))
    rounded = np.array(masking.prepare_mask(rgba, blur_x=0, blur_y=0, round_mask=True))
    assert rounded[0, 0] == 0 and rounded[0, 15] == 255
    soft = np.array(masking.prepare_mask(rgba, blur_x=0, blur_y=0, round_mask=False))
    assert soft[0, 0] == 100 and soft[0, 15] == 200
    # An opaque RGBA (or RGB) mask is read by its brightness.
    opaque = Image.new("RGBA", (4, 4), (255, 255, 255, 255))
    assert np.array(masking.prepare_mask(opaque, blur_x=0, blur_y=0)).min() == 255
    inverted = np.array(masking.prepare_mask(box_mask(8, 8, (0, 0, 4, 8)), invert=True, blur_x=0, blur_y=0))
    assert inverted[0, 0] == 0 and inverted[0, 7] == 255


def test_get_crop_region() -> None:
    mask = np.zeros((50, 60), np.uint8)
    mask[10:20, 30:35] = 255
    assert masking.get_crop_region(mask, 0) == (30, 10, 35, 20)
    assert masking.get_crop_region(mask, 4) == (26, 6, 39, 24)
    assert masking.get_crop_region(mask, 100) == (0, 0, 60, 50)
    assert masking.get_crop_region(Image.fromarray(mask), 2) == (28, 8, 37, 22)
    assert masking.get_crop_region(np.zeros((8, 8), np.uint8), 4) is None


def test_expand_crop_region_matches_aspect_and_stays_inside() -> None:
    # A1111's docstring example: a 128x32 region processed at 512x512 becomes 128x128.
    assert masking.expand_crop_region((100, 200, 228, 232), 512, 512, 1024, 1024) == (100, 152, 228, 280)
    # Near the bottom edge the box slides up instead of leaving the picture.
    assert masking.expand_crop_region((0, 90, 40, 100), 512, 512, 100, 100) == (0, 60, 40, 100)
    # Taller than wide for a wide target: grows in x, slides right at the left edge.
    x1, y1, x2, y2 = masking.expand_crop_region((0, 0, 10, 40), 768, 512, 200, 200)
    assert (x1, y1, y2) == (0, 0, 40) and x2 == 60
    # Bigger than the picture: clipped.
    assert masking.expand_crop_region((0, 0, 100, 10), 64, 64, 100, 50) == (0, 0, 100, 50)


def test_fill_keeps_unmasked_pixels_and_paints_from_surroundings() -> None:
    image = Image.new("RGB", (64, 32), (200, 30, 30))
    image.paste((200, 30, 30), (0, 0, 32, 32))
    image.paste((30, 30, 200), (32, 0, 64, 32))
    mask = box_mask(64, 32, (24, 8, 40, 24))
    filled = np.array(masking.fill(image, mask)).astype(int)
    original = np.array(image).astype(int)
    outside = np.array(mask) == 0
    assert np.abs(filled[outside] - original[outside]).max() == 0
    assert filled[16, 25, 0] > filled[16, 25, 2]  # left part of the hole takes the red side's colour
    assert filled[16, 38, 2] > filled[16, 38, 0]


def invert_generator(image: Image.Image) -> Image.Image:
    """Stands in for the sampler + VAE: changes every pixel."""
    return Image.fromarray(255 - np.array(image.convert("RGB")))


def assert_unchanged_outside(result: Image.Image, original: Image.Image, blurred_mask: Image.Image) -> None:
    outside = np.array(blurred_mask) == 0
    assert outside.sum() > 0
    diff = np.abs(np.array(result).astype(int) - np.array(original).astype(int))
    assert diff[outside].max() <= 1
    inside = np.array(blurred_mask) == 255
    assert inside.sum() > 0 and diff[inside].sum(axis=-1).min() > 0  # the generated pixels did land inside


@pytest.mark.parametrize("fill_mode", [masking.ORIGINAL, masking.FILL])
def test_whole_picture_flow_keeps_pixels_outside_mask(fill_mode: int) -> None:
    original = gradient_image(96, 64)
    mask = box_mask(96, 64, (30, 20, 60, 44))
    setup = masking.prepare_inpainting([original], mask, 96, 64, blur_x=4, blur_y=4, only_masked=False,
                                       fill_mode=fill_mode)
    assert setup.paste_loc is None and len(setup.overlays) == 1 and setup.latent_mask.size == (96, 64)
    assert setup.extra_generation_params["Mask blur"] == 4
    result = masking.apply_overlay(invert_generator(setup.images[0]), setup.paste_loc, setup.overlays[0])
    assert result.size == original.size
    assert_unchanged_outside(result, original, masking.prepare_mask(mask, blur_x=4, blur_y=4))


def test_whole_picture_flow_with_resize() -> None:
    """The mask and image are resized to the processing size; the overlay lives at that size too."""
    original = gradient_image(80, 40)
    mask = box_mask(80, 40, (10, 10, 30, 30))
    setup = masking.prepare_inpainting([original], mask, 64, 32, blur_x=2, blur_y=2, only_masked=False)
    result = masking.apply_overlay(invert_generator(setup.images[0]), setup.paste_loc, setup.overlays[0])
    assert result.size == (64, 32)
    assert_unchanged_outside(result, original.resize((64, 32), Image.Resampling.LANCZOS), setup.latent_mask)


def test_only_masked_flow_crops_and_pastes_back() -> None:
    original = gradient_image(120, 90)
    mask = box_mask(120, 90, (60, 20, 100, 50))
    setup = masking.prepare_inpainting([original], mask, 64, 64, blur_x=4, blur_y=4, only_masked=True,
                                       padding=8, fill_mode=masking.FILL)
    x, y, w, h = setup.paste_loc
    assert setup.crop_region == (x, y, x + w, y + h)
    assert math.isclose(w / h, 1.0, abs_tol=0.05)
    assert setup.images[0].size == (64, 64) and setup.latent_mask.size == (64, 64)
    assert setup.overlays[0].size == original.size
    assert setup.extra_generation_params["Inpaint area"] == "Only masked"
    result = masking.apply_overlay(invert_generator(setup.images[0]), setup.paste_loc, setup.overlays[0])
    assert result.size == original.size
    assert_unchanged_outside(result, original, masking.prepare_mask(mask, blur_x=4, blur_y=4))


def test_only_masked_with_blank_mask_falls_back_to_img2img() -> None:
    setup = masking.prepare_inpainting([gradient_image(32, 32)], Image.new("L", (32, 32)), 32, 32, only_masked=True)
    assert setup.latent_mask is None and setup.overlays == [] and setup.comments
    assert masking.apply_overlay(setup.images[0], None, None).size == (32, 32)


def test_create_overlay_doubles_mask_for_whole_picture_only() -> None:
    image = gradient_image(8, 8)
    mask = Image.new("L", (8, 8), 100)
    assert np.array(masking.create_overlay(image, mask))[..., 3].max() == 255 - 200
    assert np.array(masking.create_overlay(image, mask, (0, 0, 8, 8)))[..., 3].max() == 255 - 100


def test_latent_mask_from() -> None:
    mask = box_mask(64, 64, (0, 0, 32, 64))
    keep, paint = masking.latent_mask_from(mask, 8, 8)
    assert keep.shape == paint.shape == (4, 8, 8)
    assert torch.equal(keep + paint, torch.ones(4, 8, 8))
    assert paint[:, :, :4].min() == 1 and paint[:, :, 4:].max() == 0
    soft_keep, soft_paint = masking.latent_mask_from(Image.new("L", (64, 64), 100), 8, 8, round_mask=False)
    assert torch.allclose(soft_paint, torch.full((4, 8, 8), 100 / 255))
    hard_keep, _ = masking.latent_mask_from(Image.new("L", (64, 64), 100), 8, 8)
    assert hard_keep.min() == 1


def test_masked_content_latent_modes() -> None:
    init = torch.ones(1, 4, 4, 4)
    noise = torch.full((1, 4, 4, 4), 7.0)
    keep, _ = masking.latent_mask_from(box_mask(32, 32, (0, 0, 16, 32)), 4, 4)
    noised = masking.masked_content_latent(init, keep, masking.LATENT_NOISE, noise)
    assert noised[..., :2].unique().tolist() == [7.0] and noised[..., 2:].unique().tolist() == [1.0]
    nothing = masking.masked_content_latent(init, keep, masking.LATENT_NOTHING)
    assert nothing[..., :2].abs().max() == 0 and nothing[..., 2:].min() == 1
    assert masking.masked_content_latent(init, keep, masking.FILL) is init
    with pytest.raises(ValueError):
        masking.masked_content_latent(init, keep, masking.LATENT_NOISE)
    x = torch.full_like(init, 3.0)
    blended = masking.apply_latent_mask(x, init, keep, 1 - keep)
    assert blended[..., :2].unique().tolist() == [3.0] and blended[..., 2:].unique().tolist() == [1.0]


def fake_vae_encode(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 4, H/8, W/8): enough structure to see what the encoder was given."""
    pooled = torch.nn.functional.avg_pool2d(image, 8)
    return torch.cat([pooled, pooled.mean(1, keepdim=True)], dim=1)


def test_inpainting_image_conditioning() -> None:
    image = torch.full((2, 3, 32, 32), 0.5)
    mask = box_mask(32, 32, (0, 0, 16, 32))
    cond = masking.inpainting_image_conditioning(fake_vae_encode, image, mask)
    assert cond.shape == (2, 5, 4, 4)
    assert cond[:, 0, :, :2].min() == 1 and cond[:, 0, :, 2:].max() == 0
    assert cond[:, 1:, :, :2].abs().max() == 0  # masked area blanked before encoding
    assert torch.allclose(cond[:, 1:4, :, 2:], torch.full((2, 3, 4, 2), 0.5))
    # inpainting_mask_weight 0: the model sees the whole image.
    unmasked = masking.inpainting_image_conditioning(fake_vae_encode, image, mask, mask_weight=0.0)
    assert torch.allclose(unmasked[:, 1:4], torch.full((2, 3, 4, 4), 0.5))
    # No mask: everything masked.
    full = masking.inpainting_image_conditioning(fake_vae_encode, image, None)
    assert full[:, 0].min() == 1 and full[:, 1:].abs().max() == 0
    txt = masking.txt2img_inpainting_conditioning(fake_vae_encode, 3, 32, 16)
    assert txt.shape == (3, 5, 4, 2) and txt[:, 0].min() == 1
