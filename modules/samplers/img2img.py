"""img2img / hires-fix step arithmetic: how many steps a denoising strength buys, and where sampling starts.

A1111's rule (``sd_samplers_common.setup_img2img_steps``) in two modes:

* default: the schedule is built for the requested ``steps`` and only its tail is run:
  ``t_enc = int(min(denoise, 0.999) * steps)``, so about ``denoise * steps`` steps execute;
* ``img2img_fix_steps`` (and always for hires fix, which passes its own step count): the schedule is stretched to
  ``int(requested / min(denoise, 0.999))`` steps so that exactly ``requested`` of them execute (``t_enc = requested
  - 1``).

k-diffusion samplers then take ``sigmas[steps - t_enc - 1:]`` (``t_enc + 2`` sigmas, ``t_enc + 1`` steps) and start
from ``init + noise * sigma_start``. Timestep samplers take ``timesteps[:t_enc]`` and start from
``sqrt(ab) * init + sqrt(1 - ab) * noise`` at ``ab = alphas_cumprod[timesteps[t_enc]]``, i.e. one timestep noisier
than the first one they evaluate (an A1111 quirk kept for identical results). In both cases A1111 reports
``t_enc + 1`` steps of progress.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def setup_img2img_steps(requested_steps: int, denoising_strength: float, *, fix_steps: bool = False) -> tuple[int, int]:
    """(steps the schedule is built for, t_enc). ``fix_steps``: A1111's ``img2img_fix_steps`` or a hires pass."""
    if fix_steps:
        steps = int(requested_steps / min(denoising_strength, 0.999)) if denoising_strength > 0 else 0
        return steps, requested_steps - 1
    return requested_steps, int(min(denoising_strength, 0.999) * requested_steps)


def img2img_sigmas(sigmas: Tensor, steps: int, t_enc: int) -> Tensor:
    """The tail of a ``steps``-step k-diffusion schedule (``steps + 1`` sigmas ending in 0) that img2img runs."""
    return sigmas[steps - t_enc - 1 :]


def noise_latent(init_latent: Tensor, noise: Tensor, sigma: float | Tensor, extra_noise: float = 0.0) -> Tensor:
    """k-diffusion img2img start ``init + noise * sigma``; ``img2img_extra_noise`` adds ``noise * extra_noise``."""
    x = init_latent + noise * sigma
    return x + noise * extra_noise if extra_noise > 0 else x


def img2img_timesteps(timesteps: Tensor, t_enc: int) -> tuple[Tensor, int]:
    """(timesteps the sampler walks, the timestep the init latent is noised to) for a timestep sampler."""
    return timesteps[:t_enc], int(timesteps[t_enc])


def noise_latent_vp(
    init_latent: Tensor, noise: Tensor, alphas_cumprod: Tensor, timestep: int, extra_noise: float = 0.0
) -> Tensor:
    """Timestep-sampler img2img start ``sqrt(ab) * init + sqrt(1 - ab) * noise``; extra noise is scaled by sqrt(ab)."""
    alpha_bar = float(alphas_cumprod.detach().to("cpu", torch.float64)[timestep])
    x = init_latent * math.sqrt(alpha_bar) + noise * math.sqrt(1 - alpha_bar)
    return x + noise * (extra_noise * math.sqrt(alpha_bar)) if extra_noise > 0 else x


def blend_latents(x: Tensor, init_latent: Tensor, mask: Tensor, nmask: Tensor) -> Tensor:
    """Inpainting's final blend after sampling: keep the original where ``mask`` is 1 (``x * nmask + init * mask``)."""
    return x * nmask + init_latent * mask
