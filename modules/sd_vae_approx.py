"""A1111's "Approx cheap" live preview: each latent cell's colour as a fixed linear map of its 4 channels.

The VAE's latent channels are close to a colour space of their own (brightness, two colour axes and a pattern
channel), so ``rgb = latent @ factors + bias`` gives a recognisable thumbnail for the cost of one tiny matrix product:
one pixel per latent cell, the UI scales it up. The maps work on the scaled latents the UNet sees (``vae latent *
scale_factor``) and produce RGB in about [-1, 1], the VAE's output range.

Sources of the published factors:

* SD1/SD2: keturn's least-squares fit for SD 1.4, "Decoding latents to RGB without upscaling"
  (discuss.huggingface.co/t/decoding-latents-to-rgb-without-upscaling/23204); A1111 uses the same table. SD2 shares
  SD1's VAE, so the table serves both.
* SDXL: the fit with a bias that ComfyUI ships for the SDXL VAE (``comfy/latent_formats.py``, class ``SDXL``); the
  SDXL latent has a non-zero mean, which the bias absorbs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor


@dataclass(frozen=True)
class LatentRGBMap:
    """``rgb[c] = sum_l latent[l] * factors[l][c] + bias[c]``: rows are latent channels, columns R, G, B."""

    factors: tuple[tuple[float, float, float], ...]
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def matrices(self) -> tuple[Tensor, Tensor]:
        """The factors as a ``[channels, 3]`` and the bias as a ``[3]`` float32 CPU tensor."""
        return torch.tensor(self.factors, dtype=torch.float32), torch.tensor(self.bias, dtype=torch.float32)


SD_LATENT_RGB = LatentRGBMap(
    factors=(
        (0.298, 0.207, 0.208),
        (0.187, 0.286, 0.173),
        (-0.158, 0.189, 0.264),
        (-0.184, -0.271, -0.473),
    ),
)
"""SD1/SD2 VAE latent space (keturn's SD 1.4 fit, no bias)."""

SDXL_LATENT_RGB = LatentRGBMap(
    factors=(
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    bias=(0.1084, -0.0175, -0.0011),
)
"""SDXL VAE latent space (ComfyUI's SDXL fit with bias)."""

_TABLES: dict[str, tuple[Tensor, Tensor]] = {}


def latent_rgb_map_for(family: str) -> LatentRGBMap:
    """The map for a checkpoint family (``sd1``, ``sd2``, ``sdxl``, ``sdxl_refiner``)."""
    return SDXL_LATENT_RGB if family.startswith("sdxl") else SD_LATENT_RGB


def _tables(family: str) -> tuple[Tensor, Tensor]:
    key = "sdxl" if family.startswith("sdxl") else "sd"
    if key not in _TABLES:
        _TABLES[key] = latent_rgb_map_for(family).matrices()
    return _TABLES[key]


def cheap_approximation(latent: Tensor, family: str = "sd1") -> Tensor:
    """``[C, h, w]`` (or a batch, of which the first image is used) scaled latent -> ``[3, h, w]`` RGB in ~[-1, 1]."""
    if latent.ndim == 4:
        latent = latent[0]
    if latent.ndim != 3:
        raise ValueError(f"expected a [channels, height, width] latent, got shape {tuple(latent.shape)}")
    factors, bias = _tables(family)
    if latent.shape[0] != factors.shape[0]:
        raise ValueError(f"the {family} preview map takes {factors.shape[0]} latent channels, got {latent.shape[0]}")
    flat = latent.detach().to("cpu", torch.float32).reshape(latent.shape[0], -1)
    rgb = torch.addmm(bias[:, None], factors.T, flat)
    return rgb.reshape(3, *latent.shape[1:])


def rgb_to_image(rgb: Tensor) -> Image.Image:
    """``[3, h, w]`` RGB in [-1, 1] -> PIL image; like A1111, values are clamped and truncated to 0..255."""
    pixels = ((rgb.float().clamp(-1.0, 1.0) + 1.0) * 127.5).to(torch.uint8)
    return Image.fromarray(np.ascontiguousarray(pixels.permute(1, 2, 0).cpu().numpy()), "RGB")


def latent_to_rgb_preview(latent: Tensor, family: str = "sd1") -> Image.Image:
    """The "Approx cheap" preview of the first latent of a batch: one RGB pixel per latent cell."""
    return rgb_to_image(cheap_approximation(latent, family))
