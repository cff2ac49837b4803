"""A1111's timestep samplers (DDIM, DDIM CFG++, PLMS; UniPC lives in :mod:`modules.samplers.unipc`).

They walk the *discrete* training timesteps of an epsilon/v model, in A1111's form
(``sd_samplers_timesteps_impl``): the state ``x`` is a variance-preserving latent
``x_t = sqrt(ab_t) * x0 + sqrt(1 - ab_t) * eps`` (``ab`` = alpha_bar = ``alphas_cumprod``), so txt2img starts from
plain unit noise, not noise times sigma_max as the k-diffusion samplers do.

The ``model`` they drive is the same k-diffusion style denoiser the k-samplers call (usually the CFG denoiser):
``model(x_ve, sigma, **extra_args) -> x0`` with ``x_ve = x_t / sqrt(ab_t)`` and ``sigma = sqrt((1 - ab_t) / ab_t)``.
That replaces A1111's ``CompVisTimestepsDenoiser`` (which hands the sampler eps); eps is recovered as
``(x_t - sqrt(ab_t) * x0) / sqrt(1 - ab_t)``, which is exact because CFG's combination is affine.

Quirks kept on purpose, because they decide which image a seed gives:

* ``timesteps_for_steps``: ``range(0, 1000, 1000 // steps) + 1`` clipped to 999. For 20 steps that is 1, 51, ..., 951.
* The loops run ``len(timesteps) - 1`` model steps and stop at ``timesteps[0]`` (t = 1), so "20 steps" of DDIM are
  19 UNet steps while "30 steps" are 30 (1000 // 30 = 33 gives 31 timesteps).
* img2img (see :mod:`modules.samplers.img2img`) noises to ``timesteps[t_enc]`` but starts at ``timesteps[t_enc - 1]``.

Randomness only comes from ``noise_sampler(sigma, sigma_next) -> noise`` (k-diffusion's interface, sigmas in the
k-diffusion scale), so per-image seeded generators give batch-size independent results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import trange

from modules.samplers.unipc import sample_unipc

__all__ = [
    "TIMESTEP_SAMPLERS",
    "denoise_vp",
    "sample_ddim",
    "sample_ddim_cfgpp",
    "sample_plms",
    "sample_unipc",
    "timesteps_for_steps",
]

Denoiser = Callable[..., Tensor]
StepCallback = Callable[[dict[str, Any]], None]
NoiseSampler = Callable[[Tensor, Tensor], Tensor]

NUM_TRAIN_TIMESTEPS = 1000
CFGPP_SCALE_DIVISOR = 12.5  # A1111 maps the UI's CFG 0..12.5 onto CFG++'s lambda 0..1


def timesteps_for_steps(
    steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, *, discard_next_to_last_sigma: bool = False
) -> Tensor:
    """Ascending int64 timesteps of A1111's timestep samplers: ``range(0, N, N // steps) + 1`` clipped to N - 1.

    ``discard_next_to_last_sigma`` adds one step, as A1111 does for timestep samplers.
    """
    steps += 1 if discard_next_to_last_sigma else 0
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must be in 1..{num_train_timesteps}, got {steps}")
    return (torch.arange(0, num_train_timesteps, num_train_timesteps // steps) + 1).clamp(0, num_train_timesteps - 1)


def alpha_bar_to_sigma(alpha_bar: float) -> float:
    """k-diffusion noise level of a VP noise level: sigma = sqrt((1 - ab) / ab)."""
    return math.sqrt((1.0 - alpha_bar) / alpha_bar)


def _sigma_dtype(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def denoise_vp(model: Denoiser, x: Tensor, alpha_bar: float, extra_args: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Run a k-diffusion denoiser on the VP latent ``x`` at noise level ``alpha_bar``; return (x0, eps).

    This is the one place where VP latents meet the sigma-space denoiser, so the samplers stay in A1111's algebra.
    """
    scale, noise_scale = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    # float32 at least: in half precision sigma -> timestep would be off by up to a timestep near sigma_max.
    sigma = torch.full((x.shape[0],), alpha_bar_to_sigma(alpha_bar), dtype=_sigma_dtype(x), device=x.device)
    x0 = model(x / scale, sigma, **extra_args)
    eps = (x - scale * x0) / noise_scale
    return x0, eps


def _alpha_bars(alphas_cumprod: Tensor, timesteps: Tensor) -> tuple[list[float], list[float]]:
    """ab at each timestep and at the one before it (``ab[0]`` before the first), as float64 Python numbers."""
    table = alphas_cumprod.detach().to("cpu", torch.float64)
    ts = timesteps.detach().to("cpu", torch.long)
    prev = torch.cat([ts.new_zeros(1), ts[:-1]])
    return table[ts].tolist(), table[prev].tolist()


def _ddim_noise_std(eta: float, ab: float, ab_prev: float) -> float:
    """DDIM's sigma_t: ``eta`` times the std of the DDPM posterior q(x_prev | x_t, x0)."""
    if eta == 0:
        return 0.0
    return eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))


def _step_noise(noise_sampler: NoiseSampler | None, x: Tensor, ab: float, ab_prev: float) -> Tensor:
    if noise_sampler is None:
        raise ValueError("eta > 0 needs a noise_sampler (no global RNG is used)")
    sigma = torch.tensor(alpha_bar_to_sigma(ab), device=x.device)
    sigma_next = torch.tensor(alpha_bar_to_sigma(ab_prev), device=x.device)
    return noise_sampler(sigma, sigma_next).to(x)


def _report(callback: StepCallback | None, x: Tensor, i: int, ab: float, denoised: Tensor) -> None:
    if callback is not None:
        sigma = alpha_bar_to_sigma(ab)
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})


@torch.no_grad()
def sample_ddim(
    model: Denoiser,
    x: Tensor,
    timesteps: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    eta: float = 0.0,
    *,
    alphas_cumprod: Tensor,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DDIM (Song et al. 2020) over A1111's timesteps; ``eta`` = 0 is deterministic and draws no noise."""
    extra_args = extra_args or {}
    abs_, abs_prev = _alpha_bars(alphas_cumprod, timesteps)
    for i in trange(len(timesteps) - 1, disable=disable):
        index = len(timesteps) - 1 - i
        ab, ab_prev = abs_[index], abs_prev[index]
        x0, eps = denoise_vp(model, x, ab, extra_args)
        std = _ddim_noise_std(eta, ab, ab_prev)
        x = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev - std**2) * eps
        if std > 0:
            x = x + std * _step_noise(noise_sampler, x, ab, ab_prev)
        _report(callback, x, i, ab, x0)
    return x


@contextmanager
def _cfgpp_mode(model: Denoiser) -> Iterator[None]:
    """Ask a CFG denoiser for CFG++: guidance scaled by 1/12.5 and the uncond prediction kept for the sampler."""
    if not hasattr(model, "cond_scale_multiplier"):
        yield
        return
    saved = model.cond_scale_multiplier, model.keep_uncond_denoised
    model.cond_scale_multiplier, model.keep_uncond_denoised = 1 / CFGPP_SCALE_DIVISOR, True
    try:
        yield
    finally:
        model.cond_scale_multiplier, model.keep_uncond_denoised = saved


@torch.no_grad()
def sample_ddim_cfgpp(
    model: Denoiser,
    x: Tensor,
    timesteps: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    eta: float = 0.0,
    *,
    alphas_cumprod: Tensor,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DDIM with CFG++ (Chung et al. 2024): x0 from the guided prediction, the renoising direction from the uncond one.

    ``model`` should be a :class:`~modules.samplers.cfg_denoiser.CFGDenoiser` (it exposes the uncond prediction); a
    plain denoiser has no guidance, and then this is exactly DDIM.
    """
    extra_args = extra_args or {}
    abs_, abs_prev = _alpha_bars(alphas_cumprod, timesteps)
    with _cfgpp_mode(model):
        for i in trange(len(timesteps) - 1, disable=disable):
            index = len(timesteps) - 1 - i
            ab, ab_prev = abs_[index], abs_prev[index]
            x0, _ = denoise_vp(model, x, ab, extra_args)
            x0_uncond = getattr(model, "last_uncond_denoised", None)
            x0_uncond = x0 if x0_uncond is None else x0_uncond
            eps_uncond = (x - math.sqrt(ab) * x0_uncond) / math.sqrt(1 - ab)
            std = _ddim_noise_std(eta, ab, ab_prev)
            x = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev - std**2) * eps_uncond
            if std > 0:
                x = x + std * _step_noise(noise_sampler, x, ab, ab_prev)
            _report(callback, x, i, ab, x0)
    return x


# Adams-Bashforth weights on (eps_t, eps_{t+1}, ...) once 1, 2 or 3 earlier predictions are known.
_PLMS_WEIGHTS = {1: (3 / 2, -1 / 2), 2: (23 / 12, -16 / 12, 5 / 12), 3: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


@torch.no_grad()
def sample_plms(
    model: Denoiser,
    x: Tensor,
    timesteps: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    *,
    alphas_cumprod: Tensor,
) -> Tensor:
    """PLMS (Liu et al. 2022, "pseudo numerical methods"): DDIM steps driven by a linear multistep combination of eps.

    The first step is a pseudo improved-Euler step (two model calls); later ones are Adams-Bashforth of order 2..4.
    """
    extra_args = extra_args or {}
    abs_, abs_prev = _alpha_bars(alphas_cumprod, timesteps)
    old_eps: list[Tensor] = []

    def ddim_step(x_t: Tensor, eps: Tensor, ab: float, ab_prev: float) -> tuple[Tensor, Tensor]:
        x0 = (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        return math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps, x0

    for i in trange(len(timesteps) - 1, disable=disable):
        index = len(timesteps) - 1 - i
        ab, ab_prev = abs_[index], abs_prev[index]
        _, eps = denoise_vp(model, x, ab, extra_args)
        if not old_eps:
            x_next, _ = ddim_step(x, eps, ab, ab_prev)
            # A1111 evaluates the second point at timesteps[index - 1], whose ab is ab_prev.
            _, eps_next = denoise_vp(model, x_next, abs_[max(index - 1, 0)], extra_args)
            eps_prime = (eps + eps_next) / 2
        else:
            weights = _PLMS_WEIGHTS[len(old_eps)]
            eps_prime = weights[0] * eps
            for weight, older in zip(weights[1:], reversed(old_eps), strict=False):
                eps_prime = eps_prime + weight * older
        x, x0 = ddim_step(x, eps_prime, ab, ab_prev)
        old_eps = [*old_eps, eps][-3:]
        _report(callback, x, i, ab, x0)
    return x


# (A1111 name, function, aliases, options) in A1111's UI order; registry.py registers them with kind="timesteps".
# Calling convention (what A1111's ``CompVisSampler`` does): ``function(cfg_denoiser, x, timesteps,
# extra_args={"cond", "uncond", "cond_scale", "image_cond", "s_min_uncond"}, callback=..., disable=...,
# alphas_cumprod=<the model's table>)``, plus ``eta`` (A1111's "eta_ddim" setting, default 0) and ``noise_sampler``
# where the signature has them, ``is_img2img=True`` for UniPC on img2img and the ``uni_pc_*`` settings as
# ``order``/``variant``/``skip_type``/``lower_order_final``. ``x`` is unit noise for txt2img (not times sigma_max) or
# ``img2img.noise_latent_vp(...)``; the CFG denoiser should blend inpainting masks before denoising
# (``mask_before_denoising=True``) as A1111 does for these samplers.
TIMESTEP_SAMPLERS: list[tuple[str, Callable[..., Tensor], list[str], dict[str, Any]]] = [
    ("DDIM", sample_ddim, ["ddim"], {}),
    ("DDIM CFG++", sample_ddim_cfgpp, ["ddim_cfgpp"], {}),
    ("PLMS", sample_plms, ["plms"], {}),
    ("UniPC", sample_unipc, ["unipc"], {}),
]
