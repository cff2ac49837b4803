"""Tests for modules/samplers/img2img.py: A1111's ``setup_img2img_steps`` arithmetic with concrete numbers.

Reference: A1111 ``sd_samplers_common.setup_img2img_steps`` and the ``sample_img2img`` methods of
``KDiffusionSampler`` / ``CompVisSampler`` (exact integer results, float results to 1e-6).
"""

from __future__ import annotations

import math

import pytest
import torch

from modules.samplers.img2img import (
    blend_latents,
    img2img_sigmas,
    img2img_timesteps,
    noise_latent,
    noise_latent_vp,
    setup_img2img_steps,
)
from modules.samplers.timesteps import sample_ddim, sample_unipc, timesteps_for_steps
from modules.sd.schedule import alphas_cumprod_from_betas, scaled_linear_betas

ALPHAS_CUMPROD = alphas_cumprod_from_betas(scaled_linear_betas())


@pytest.mark.parametrize(
    ("steps", "denoise", "expected"),
    [
        (20, 0.75, (20, 15)),
        (20, 1.0, (20, 19)),  # denoise is capped at 0.999
        (30, 0.5, (30, 15)),
        (100, 0.29, (100, 28)),  # int(0.29 * 100) is 28 in floating point, as in A1111
        (20, 0.0, (20, 0)),
    ],
)
def test_default_mode_runs_the_tail_of_the_requested_schedule(steps: int, denoise: float, expected: tuple[int, int]):
    assert setup_img2img_steps(steps, denoise) == expected


@pytest.mark.parametrize(
    ("requested", "denoise", "expected"),
    [
        (20, 0.5, (40, 19)),
        (10, 0.3, (33, 9)),  # int(10 / 0.3) = 33
        (20, 1.0, (20, 19)),  # int(20 / 0.999) = 20
        (20, 0.0, (0, 19)),
    ],
)
def test_fix_steps_mode_stretches_the_schedule(requested: int, denoise: float, expected: tuple[int, int]):
    assert setup_img2img_steps(requested, denoise, fix_steps=True) == expected


def test_kdiffusion_tail_runs_t_enc_plus_one_steps():
    sigmas = torch.cat([torch.linspace(14.6, 0.03, 20), torch.zeros(1)])
    steps, t_enc = setup_img2img_steps(20, 0.75)
    tail = img2img_sigmas(sigmas, steps, t_enc)
    assert len(tail) - 1 == t_enc + 1 == 16 and tail[0] == sigmas[4]

    steps, t_enc = setup_img2img_steps(20, 0.5, fix_steps=True)  # exactly the requested 20 steps
    tail = img2img_sigmas(torch.arange(steps + 1.0).flip(0), steps, t_enc)
    assert len(tail) - 1 == 20 and tail[0] == 20.0


def test_kdiffusion_noising():
    init, noise = torch.full((1, 4, 2, 2), 0.5), torch.full((1, 4, 2, 2), -1.0)
    torch.testing.assert_close(noise_latent(init, noise, 3.0), torch.full_like(init, -2.5))
    torch.testing.assert_close(noise_latent(init, noise, 3.0, extra_noise=0.1), torch.full_like(init, -2.6))


def test_timestep_samplers_start_one_timestep_above_the_first_evaluated():
    steps, t_enc = setup_img2img_steps(20, 0.75)
    sched, noise_timestep = img2img_timesteps(timesteps_for_steps(steps), t_enc)
    assert sched.tolist() == list(range(1, 702, 50)) and noise_timestep == 751


def test_vp_noising():
    init, noise = torch.full((1, 4, 2, 2), 0.5), torch.full((1, 4, 2, 2), -1.0)
    a = float(ALPHAS_CUMPROD[751])
    expected = 0.5 * math.sqrt(a) - math.sqrt(1 - a)
    torch.testing.assert_close(noise_latent_vp(init, noise, ALPHAS_CUMPROD, 751), torch.full_like(init, expected))
    extra = noise_latent_vp(init, noise, ALPHAS_CUMPROD, 751, extra_noise=0.2)
    torch.testing.assert_close(extra, torch.full_like(init, expected - 0.2 * math.sqrt(a)))


def test_model_calls_of_timestep_samplers_on_img2img():
    """A1111: DDIM walks timesteps[:t_enc] in t_enc - 1 steps; UniPC takes t_enc steps from timesteps[t_enc-1]+1."""
    calls = []

    def model(x, sigma):
        calls.append(float(sigma[0]))
        return torch.zeros_like(x)

    steps, t_enc = setup_img2img_steps(20, 0.75)
    sched, _ = img2img_timesteps(timesteps_for_steps(steps), t_enc)
    x = torch.zeros(1, 4, 2, 2)
    sample_ddim(model, x, sched, alphas_cumprod=ALPHAS_CUMPROD, disable=True)
    assert len(calls) == t_enc - 1 == 14
    first_sigma = math.sqrt((1 - ALPHAS_CUMPROD[701]) / ALPHAS_CUMPROD[701])
    assert calls[0] == pytest.approx(float(first_sigma), rel=1e-6)
    calls.clear()
    sample_unipc(model, x, sched, alphas_cumprod=ALPHAS_CUMPROD, is_img2img=True, disable=True)
    assert len(calls) == t_enc


def test_final_inpainting_blend():
    x, init = torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, 2)
    mask = torch.tensor([[[[1.0, 0.25]]]])
    torch.testing.assert_close(blend_latents(x, init, mask, 1 - mask), torch.tensor([[[[1.0, 0.25]]]]))
