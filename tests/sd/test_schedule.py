"""Tests for modules/sd/schedule.py against diffusers' schedulers and k-diffusion's sigma<->t rule.

Our tables are float64; diffusers builds them in float32 (betas, cumulative product, sigmas), so agreement is to
float32 rounding: alphas_cumprod within relative 2e-5 after a 1000-term cumulative product (observed 9e-7); sigmas
within relative 5e-5, because at t=0 1 - alpha_bar is only 8.5e-4, so one float32 ulp of alpha_bar (6e-8) is 7e-5 of
it, halved by the square root (observed 1.3e-5).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modules.sd.schedule import (
    DiscreteSchedule,
    alphas_cumprod_from_betas,
    scaled_linear_betas,
    sigmas_from_alphas_cumprod,
)

DIFFUSERS_LDM = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


@pytest.fixture(scope="module")
def schedule() -> DiscreteSchedule:
    return DiscreteSchedule.ldm_linear()


def test_betas_and_alphas_cumprod_match_diffusers_ddpm():
    """Reference: diffusers DDPMScheduler(beta_schedule="scaled_linear"), float32; rtol 2e-5 (see module doc)."""
    from diffusers import DDPMScheduler

    reference = DDPMScheduler(**DIFFUSERS_LDM)
    betas = scaled_linear_betas()
    alphas_cumprod = alphas_cumprod_from_betas(betas)
    assert betas.dtype == alphas_cumprod.dtype == torch.float64
    torch.testing.assert_close(betas, reference.betas.double(), rtol=2e-6, atol=0)
    torch.testing.assert_close(alphas_cumprod, reference.alphas_cumprod.double(), rtol=2e-5, atol=0)


def test_sigmas_match_diffusers_euler(schedule):
    """Reference: diffusers EulerDiscreteScheduler's training sigmas (descending, trailing 0); rtol 5e-5."""
    from diffusers import EulerDiscreteScheduler

    reference = EulerDiscreteScheduler(**DIFFUSERS_LDM).sigmas.double()
    assert reference[-1] == 0
    torch.testing.assert_close(schedule.sigmas, reference[:-1].flip(0), rtol=5e-5, atol=0)
    torch.testing.assert_close(sigmas_from_alphas_cumprod(schedule.alphas_cumprod), schedule.sigmas)


def test_sigma_range_is_the_familiar_sd_range(schedule):
    assert schedule.num_timesteps == 1000
    assert schedule.sigma_min == pytest.approx(0.029168, abs=1e-5)
    assert schedule.sigma_max == pytest.approx(14.614642, abs=1e-5)


def test_sigma_to_t_matches_k_diffusion_rule_as_in_diffusers(schedule):
    """Reference: diffusers EulerDiscreteScheduler._sigma_to_t (k-diffusion's log-sigma interpolation, numpy),
    on our own float64 log sigmas so only the algorithm is compared; atol 1e-9 timesteps. Includes sigmas outside
    the table (clamped to t=0 and t=999) and exact table entries."""
    from diffusers import EulerDiscreteScheduler

    reference = EulerDiscreteScheduler(**DIFFUSERS_LDM)
    generator = torch.Generator().manual_seed(0)
    log_range = torch.rand(200, generator=generator, dtype=torch.float64) * 7 - 4.0  # log sigma in [-4, 3]
    sigmas = torch.cat([log_range.exp(), schedule.sigmas[[0, 1, 500, 998, 999]], torch.tensor([1e-3, 100.0])])
    expected = reference._sigma_to_t(sigmas.numpy(), schedule.log_sigmas.numpy())
    t = schedule.sigma_to_t(sigmas)
    assert t.dtype == torch.float64
    np.testing.assert_allclose(t.numpy(), expected, rtol=0, atol=1e-9)
    assert t[-2] == 0 and t[-1] == 999


def test_sigma_t_round_trip_in_float32(schedule):
    """t -> sigma -> t recovers fractional timesteps to 1e-3 in float32 (float32 sigma has ~6e-8 relative error,
    and one timestep spans a log-sigma step of >= 1e-3), and integer t lands on the table's sigmas."""
    t = torch.linspace(0, 999, 1777, dtype=torch.float32)
    sigma = schedule.t_to_sigma(t)
    assert sigma.dtype == torch.float32
    back = schedule.sigma_to_t(sigma)
    assert (back - t).abs().max() < 1e-3

    integer_t = torch.tensor([0, 1, 250, 999])
    torch.testing.assert_close(schedule.t_to_sigma(integer_t), schedule.sigmas[integer_t].float())


def test_t_to_sigma_interpolates_log_sigma(schedule):
    sigma = schedule.t_to_sigma(torch.tensor([10.25], dtype=torch.float64))
    expected = math.exp(0.75 * math.log(schedule.sigmas[10]) + 0.25 * math.log(schedule.sigmas[11]))
    assert sigma.item() == pytest.approx(expected, rel=1e-12)


def test_quantized_sigma_to_t_picks_nearest_timestep(schedule):
    sigmas = schedule.sigmas[[3, 400, 999]].float() * torch.tensor([1.0001, 0.9999, 1.2])
    t = schedule.sigma_to_t(sigmas, quantize=True)
    assert t.dtype == torch.long
    assert t.tolist() == [3, 400, 999]


def test_sigma_to_t_keeps_shape(schedule):
    sigma = torch.full((2, 1, 3), 1.0)
    assert schedule.sigma_to_t(sigma).shape == (2, 1, 3)
    assert schedule.sigma_to_t(sigma, quantize=True).shape == (2, 1, 3)


def test_prediction_type_is_validated():
    assert DiscreteSchedule.ldm_linear("v_prediction").prediction == "v_prediction"
    assert DiscreteSchedule.ldm_linear().prediction == "epsilon"
    with pytest.raises(ValueError, match="prediction"):
        DiscreteSchedule.ldm_linear("sample")  # type: ignore[arg-type]
