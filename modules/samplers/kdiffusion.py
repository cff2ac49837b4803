"""k-diffusion's samplers (Karras et al. 2022 view: ``x = x0 + sigma * noise``), one small function each.

Every sampler is ``sample_*(model, x, sigmas, extra_args=None, callback=None, disable=None, <knobs>)``: ``model(x,
sigma_vector, **extra_args)`` returns the denoised estimate, ``x`` starts at noise already scaled by ``sigmas[0]`` (or
a noised image for img2img), ``sigmas`` is descending and normally ends in 0. ``callback`` receives k-diffusion's
dict ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` once per model step. Stochastic samplers take their noise from
``noise_sampler(sigma, sigma_next)`` (see ``noise.py``) so the pipeline supplies per-image seeded noise; only when
none is passed do they fall back to torch's global RNG.

This file holds the ODE solvers (Euler, Heun, DPM2, LMS, DPM++ 2M), the ancestral ones (Euler a, DPM2 a,
DPM++ 2S a), LCM and Restart; ``kdiffusion_sde.py`` holds the DPM-Solver family (DPM++ SDE/2M SDE/3M SDE, DPM fast,
DPM adaptive). The maths follows k-diffusion 0.1.1 and A1111's ``sd_samplers_extra``/``sd_samplers_lcm`` so that the
same inputs give the same latents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm, trange

from modules.samplers.denoiser import append_dims
from modules.samplers.noise import NoiseSampler, default_noise_sampler
from modules.samplers.schedulers import karras

Model = Callable[..., Tensor]
Callback = Callable[[dict[str, Any]], None]


def to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """The probability-flow ODE's derivative dx/dsigma given the denoiser's estimate."""
    return (x - denoised) / append_dims(sigma, x.ndim)


def get_ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor | float]:
    """Split a step into a deterministic move down to ``sigma_down`` and fresh noise of size ``sigma_up``.

    eta=1 gives DDPM-like ancestral sampling, eta=0 the deterministic step.
    """
    if not eta:
        return sigma_to, 0.0
    sigma_up = torch.minimum(
        torch.as_tensor(sigma_to), eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    )
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def _report(callback: Callback | None, x: Tensor, i: int, sigma: Tensor, sigma_hat: Tensor, denoised: Tensor) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


def _churn(
    x: Tensor,
    sigmas: Tensor,
    i: int,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
    noise_sampler: NoiseSampler | None,
) -> tuple[Tensor, Tensor]:
    """Karras' "churn": raise the noise level to sigma_hat by adding fresh noise (no-op when s_churn is 0).

    While churn is on, noise is drawn every step (even where gamma is 0) so the draws line up with k-diffusion's.
    """
    steps = len(sigmas) - 1
    gamma = min(s_churn / steps, 2**0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
    sigma_hat = sigmas[i] * (gamma + 1)
    if s_churn > 0:
        sampler = noise_sampler if noise_sampler is not None else default_noise_sampler(x)
        eps = sampler(sigmas[i], sigmas[i + 1]) * s_noise
        if gamma > 0:
            x = x + eps * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
    return sigma_hat, x


@torch.no_grad()
def sample_euler(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Euler steps on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without the Heun correction)."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma_hat, x = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_euler_ancestral(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Euler step down to sigma_down, then fresh noise up to the next sigma ("Euler a")."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler if noise_sampler is not None else default_noise_sampler(x)
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        x = x + d * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heun(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 2); the last step to sigma 0 is plain Euler."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma_hat, x = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, sigmas[i + 1] * s_in, **extra_args)
            d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_dpm_2(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DPM-Solver-2 style midpoint step (evaluated at the log-midpoint sigma); Euler for the last step."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma_hat, x = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigma_hat)
            denoised_2 = model(x_2, sigma_mid * s_in, **extra_args)
            d_2 = to_d(x_2, sigma_mid, denoised_2)
            x = x + d_2 * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DPM2's midpoint step down to sigma_down, then fresh noise ("DPM2 a")."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler if noise_sampler is not None else default_noise_sampler(x)
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            denoised_2 = model(x_2, sigma_mid * s_in, **extra_args)
            d_2 = to_d(x_2, sigma_mid, denoised_2)
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def linear_multistep_coeff(order: int, t: np.ndarray, i: int, j: int) -> float:
    """Weight of the derivative at ``t[i - j]`` in an Adams-Bashforth step from t[i] to t[i + 1].

    The integral of a Lagrange basis polynomial of degree < 4, done exactly with 4-point Gauss-Legendre quadrature
    (k-diffusion integrates the same polynomial numerically with scipy).
    """
    if order - 1 > i:
        raise ValueError(f"order {order} too high for step {i}")
    nodes, weights = np.polynomial.legendre.leggauss(4)
    a, b = float(t[i]), float(t[i + 1])
    tau = (b - a) / 2 * nodes + (a + b) / 2
    basis = np.ones_like(tau)
    for k in range(order):
        if k != j:
            basis *= (tau - t[i - k]) / (t[i - j] - t[i - k])
    return float((b - a) / 2 * np.dot(weights, basis))


@torch.no_grad()
def sample_lms(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    order: int = 4,
) -> Tensor:
    """Linear multistep (Adams-Bashforth up to ``order``) over the previous derivatives ("LMS")."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    sigmas_np = sigmas.detach().cpu().double().numpy()
    ds: list[Tensor] = []
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        ds.append(to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        cur_order = min(i + 1, order)
        coeffs = [linear_multistep_coeff(cur_order, sigmas_np, i, j) for j in range(cur_order)]
        x = x + sum(coeff * d for coeff, d in zip(coeffs, reversed(ds), strict=True))
    return x


def _t_from_sigma(sigma: Tensor) -> Tensor:
    return sigma.log().neg()


def _sigma_from_t(t: Tensor) -> Tensor:
    return t.neg().exp()


@torch.no_grad()
def sample_dpmpp_2s_ancestral(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DPM-Solver++(2S) single-step second order down to sigma_down, then fresh noise ("DPM++ 2S a")."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler if noise_sampler is not None else default_noise_sampler(x)
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t_from_sigma(sigmas[i]), _t_from_sigma(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (_sigma_from_t(s) / _sigma_from_t(t)) * x - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, _sigma_from_t(s) * s_in, **extra_args)
            x = (_sigma_from_t(t_next) / _sigma_from_t(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
) -> Tensor:
    """DPM-Solver++(2M): second-order multistep in log-SNR time, reusing the previous step's estimate."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    old_denoised: Tensor | None = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        t, t_next = _t_from_sigma(sigmas[i]), _t_from_sigma(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            denoised_d = denoised
        else:
            r = (t - _t_from_sigma(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (_sigma_from_t(t_next) / _sigma_from_t(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_lcm(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Latent Consistency Model sampling: jump to the denoised estimate, re-noise to the next sigma."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler if noise_sampler is not None else default_noise_sampler(x)
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


def _restart_plan(sigmas: Tensor, restart_list: dict[float, list] | None) -> list[tuple[Tensor, Tensor]]:
    """The (sigma, sigma_next) pairs Restart walks: the main schedule plus repeated back-jumps (A1111's rules).

    Without an explicit ``restart_list``, 20+ steps trade 9 (or steps // 4 twice, from 36 steps) of the main
    schedule's steps for a Karras segment repeated from sigma ~2 back down to sigma ~0.1.
    """
    steps = sigmas.shape[0] - 1
    if restart_list is None:
        if steps >= 20:
            restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
            main_steps = steps - restart_steps * restart_times
            sigmas = karras(main_steps, sigmas[-2].item(), sigmas[0].item(), device=sigmas.device)
            restart_list = {0.1: [restart_steps + 1, restart_times, 2]}
        else:
            restart_list = {}
    by_index = {int(torch.argmin((sigmas - key).abs(), dim=0)): value for key, value in restart_list.items()}
    plan = []
    for i in range(len(sigmas) - 1):
        plan.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in by_index:
            restart_steps, restart_times, restart_max = by_index[i + 1]
            min_idx = i + 1
            max_idx = int(torch.argmin((sigmas - restart_max).abs(), dim=0))
            if max_idx < min_idx:
                segment = karras(restart_steps, sigmas[min_idx].item(), sigmas[max_idx].item(), device=sigmas.device)
                segment = segment[:-1]
                plan.extend(list(zip(segment[:-1], segment[1:], strict=True)) * restart_times)
    return plan


@torch.no_grad()
def sample_restart(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    s_noise: float = 1.0,
    restart_list: dict[float, list] | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Restart sampling (Xu et al. 2023): Heun steps, with jumps back up in noise that re-add fresh noise.

    ``restart_list`` maps {min_sigma: [restart_steps, restart_times, max_sigma]}; None picks A1111's default.
    """
    extra_args = extra_args or {}
    noise_sampler = noise_sampler if noise_sampler is not None else default_noise_sampler(x)
    s_in = x.new_ones([x.shape[0]])
    last_sigma: Tensor | None = None
    for step, (old_sigma, new_sigma) in enumerate(tqdm(_restart_plan(sigmas, restart_list), disable=disable)):
        if last_sigma is None:
            last_sigma = old_sigma
        elif last_sigma < old_sigma:
            x = x + noise_sampler(last_sigma, old_sigma) * s_noise * (old_sigma**2 - last_sigma**2) ** 0.5
        denoised = model(x, old_sigma * s_in, **extra_args)
        d = to_d(x, old_sigma, denoised)
        _report(callback, x, step, new_sigma, old_sigma, denoised)
        dt = new_sigma - old_sigma
        if new_sigma == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, new_sigma * s_in, **extra_args)
            d_2 = to_d(x_2, new_sigma, denoised_2)
            x = x + (d + d_2) / 2 * dt
        last_sigma = new_sigma
    return x
