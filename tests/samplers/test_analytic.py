"""The timestep samplers solve the probability-flow ODE of a distribution whose exact denoiser is known.

Data: every latent element is drawn independently from a 1-D Gaussian mixture. With ``x = x0 + sigma * noise`` the
posterior mean is closed form, ``E[x0 | x] = sum_k r_k(x) (mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k))`` with
responsibilities ``r_k`` of ``N(x; mu_k, s_k^2 + sigma^2)``, so the k-diffusion denoiser below is exact and every
error comes from the sampler. Runs start from exact samples of the VP marginal at their first timestep (A1111 uses
plain unit noise, close but not exact) and must end on the marginal at their last one: ``ab[1]`` for DDIM/PLMS, which
stop at timestep 1, ``ab[0]`` for UniPC (t = 1/1000).

Two checks, at A1111's 30 steps:

* distribution (16384 samples; standard errors 0.01 for the mean, 1.1% for the variance, 0.004 for the left-mode
  weight): mean within 0.025, left-mode weight within 0.015, variance within 3% for PLMS and UniPC and 8% for DDIM,
  which is first order and measurably shrinks the variance at 30 steps (-5.7% here; -1.6% at 100 steps);
* trajectories (256 samples) against a 100-step RK4 solution of the same ODE (converged to 1e-6): mean absolute
  error below 0.05 (DDIM), 0.01 (PLMS), 0.025 (UniPC), and DDIM's error halves when the steps double (first order).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import Tensor

from modules.samplers.cfg_denoiser import CFGDenoiser
from modules.samplers.timesteps import (
    sample_ddim,
    sample_ddim_cfgpp,
    sample_plms,
    sample_unipc,
    timesteps_for_steps,
)
from modules.sd.schedule import alphas_cumprod_from_betas, scaled_linear_betas

WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)
MEANS = torch.tensor([-1.5, 1.0], dtype=torch.float64)
STDS = torch.tensor([0.3, 0.5], dtype=torch.float64)
SPLIT = -0.4  # between the two modes
ALPHAS_CUMPROD = alphas_cumprod_from_betas(scaled_linear_betas())
TIMESTEPS = timesteps_for_steps(30)  # 1, 34, ..., 991
DIST_SHAPE = (1, 4, 64, 64)
PATH_SHAPE = (1, 1, 16, 16)


def ab(timestep: int) -> float:
    return float(ALPHAS_CUMPROD[timestep])


def exact_denoiser(x: Tensor, sigma: Tensor, **_) -> Tensor:
    """E[x0 | x0 + sigma * noise = x] for the mixture, elementwise, in float64."""
    xd = x.double()[..., None]
    var = STDS**2 + sigma.double().reshape(-1, *([1] * (x.dim() - 1)), 1) ** 2
    log_r = torch.log(WEIGHTS) - 0.5 * torch.log(var) - 0.5 * (xd - MEANS) ** 2 / var
    r = torch.softmax(log_r, dim=-1)
    return (r * (MEANS + STDS**2 / var * (xd - MEANS))).sum(-1).to(x.dtype)


def marginal_samples(alpha_bar: float, shape: tuple[int, ...] = DIST_SHAPE) -> Tensor:
    """Exact samples of sqrt(ab) x0 + sqrt(1 - ab) noise."""
    gen = torch.Generator().manual_seed(1234)
    component = torch.multinomial(WEIGHTS, math.prod(shape), replacement=True, generator=gen).reshape(shape)
    x0 = MEANS[component] + STDS[component] * torch.randn(shape, generator=gen, dtype=torch.float64)
    noise = torch.randn(shape, generator=gen, dtype=torch.float64)
    return (math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * noise).float()


def check_distribution(x: Tensor, alpha_bar: float, var_tolerance: float, mean_tolerance: float = 0.025) -> None:
    """Compare with the VP marginal at ``alpha_bar``: mean, variance and the weight of the left mode."""
    mean0 = float((WEIGHTS * MEANS).sum())
    var0 = float((WEIGHTS * (STDS**2 + MEANS**2)).sum()) - mean0**2
    component_std = torch.sqrt(alpha_bar * STDS**2 + (1 - alpha_bar))
    z = (SPLIT - math.sqrt(alpha_bar) * MEANS) / component_std
    left = float((WEIGHTS * 0.5 * torch.erfc(-z / math.sqrt(2))).sum())
    x = x.double()
    assert abs(x.mean().item() - math.sqrt(alpha_bar) * mean0) < mean_tolerance
    assert abs(x.var().item() / (alpha_bar * var0 + 1 - alpha_bar) - 1) < var_tolerance
    assert abs((x < SPLIT).double().mean().item() - left) < 0.015


def ode_solution(x: Tensor, ab_start: float, ab_end: float, steps: int = 100) -> Tensor:
    """RK4 in log sigma of the probability-flow ODE dx/dlog(sigma) = x - D(x, sigma), mapped back to VP."""
    log_sigmas = torch.linspace(
        0.5 * math.log((1 - ab_start) / ab_start), 0.5 * math.log((1 - ab_end) / ab_end), steps + 1
    ).tolist()
    x = x.double() / math.sqrt(ab_start)

    def f(x: Tensor, log_sigma: float) -> Tensor:
        return x - exact_denoiser(x, torch.tensor([math.exp(log_sigma)], dtype=torch.float64))

    for a, b in zip(log_sigmas[:-1], log_sigmas[1:], strict=True):
        h = b - a
        k1 = f(x, a)
        k2 = f(x + h / 2 * k1, a + h / 2)
        k3 = f(x + h / 2 * k2, a + h / 2)
        k4 = f(x + h * k3, b)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x * math.sqrt(ab_end)


@functools.cache
def exact_path(start: int, end: int) -> tuple[Tensor, Tensor]:
    """(samples at timestep ``start``, where the exact flow takes them at ``end``), computed once per pair."""
    x = marginal_samples(ab(start), PATH_SHAPE).double()
    return x, ode_solution(x, ab(start), ab(end))


def path_error(sampler, timesteps: Tensor, start: int, end: int) -> float:
    x, expected = exact_path(start, end)
    out = sampler(exact_denoiser, x, timesteps, alphas_cumprod=ALPHAS_CUMPROD, disable=True)
    return (out - expected).abs().mean().item()


def never_called(sigma: Tensor, sigma_next: Tensor) -> Tensor:
    raise AssertionError("a deterministic sampler drew noise")


def test_the_exact_denoiser_recovers_the_data_mean():
    x = marginal_samples(1.0)
    assert abs(exact_denoiser(x, torch.tensor([1e-4])).mean().item() - 0.25) < 0.025


@pytest.mark.parametrize(("sampler", "var_tolerance"), [(sample_ddim, 0.08), (sample_plms, 0.03)])
def test_ddim_and_plms_reach_the_marginal_at_timestep_1(sampler, var_tolerance: float):
    x = marginal_samples(ab(TIMESTEPS[-1]))
    out = sampler(exact_denoiser, x, TIMESTEPS, alphas_cumprod=ALPHAS_CUMPROD, disable=True)
    check_distribution(out, ab(1), var_tolerance)


def test_unipc_reaches_the_marginal_at_timestep_0():
    x = marginal_samples(ab(999))
    out = sample_unipc(exact_denoiser, x, TIMESTEPS, alphas_cumprod=ALPHAS_CUMPROD, disable=True)
    check_distribution(out, ab(0), 0.03)


@pytest.mark.parametrize(
    ("sampler", "start", "end", "tolerance"),
    [(sample_ddim, 991, 1, 0.05), (sample_plms, 991, 1, 0.01), (sample_unipc, 999, 0, 0.025)],
)
def test_trajectories_follow_the_exact_ode(sampler, start: int, end: int, tolerance: float):
    assert path_error(sampler, TIMESTEPS, start, end) < tolerance


def test_ddim_is_first_order():
    coarse = path_error(sample_ddim, torch.arange(1, 962, 40), 961, 1)
    fine = path_error(sample_ddim, torch.arange(1, 962, 20), 961, 1)
    assert 1.7 < coarse / fine < 2.3


def test_ddim_eta0_is_deterministic_and_draws_no_noise():
    x = marginal_samples(ab(TIMESTEPS[-1]), PATH_SHAPE)
    kwargs = {"alphas_cumprod": ALPHAS_CUMPROD, "noise_sampler": never_called, "disable": True}
    first = sample_ddim(exact_denoiser, x, TIMESTEPS, **kwargs)
    assert torch.equal(first, sample_ddim(exact_denoiser, x, TIMESTEPS, **kwargs))


def test_ddim_with_eta_samples_the_marginal_too():
    """eta = 1 (DDPM-like) is noisier and converges more slowly: 100 steps, variance within 5%, mean within 0.03."""
    timesteps = timesteps_for_steps(100)
    x = marginal_samples(ab(timesteps[-1]))
    gen = torch.Generator().manual_seed(99)
    out = sample_ddim(
        exact_denoiser,
        x,
        timesteps,
        eta=1.0,
        alphas_cumprod=ALPHAS_CUMPROD,
        noise_sampler=lambda sigma, sigma_next: torch.randn(DIST_SHAPE, generator=gen),
        disable=True,
    )
    check_distribution(out, ab(1), 0.05, mean_tolerance=0.03)


def test_ddim_cfgpp_without_guidance_signal_is_ddim():
    """With cond == uncond there is nothing to guide: CFG++'s uncond renoising direction is DDIM's own."""
    x = marginal_samples(ab(TIMESTEPS[-1]), PATH_SHAPE)
    context = torch.zeros(1, 4)
    model = CFGDenoiser(exact_denoiser)
    extra = {"cond": [[(1.0, [(100, context)])]], "uncond": [[(100, context)]], "cond_scale": 1.0}
    cfgpp = sample_ddim_cfgpp(model, x, TIMESTEPS, extra, alphas_cumprod=ALPHAS_CUMPROD, disable=True)
    ddim = sample_ddim(exact_denoiser, x, TIMESTEPS, alphas_cumprod=ALPHAS_CUMPROD, disable=True)
    torch.testing.assert_close(cfgpp, ddim, atol=1e-5, rtol=1e-5)
