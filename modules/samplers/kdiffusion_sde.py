"""The DPM-Solver family of k-diffusion samplers: DPM++ SDE, DPM++ 2M SDE, DPM++ 3M SDE, DPM fast, DPM adaptive.

Same calling convention as ``kdiffusion.py``. The SDE samplers want Brownian-tree noise (``noise.
BrownianTreeNoiseSampler``) so that noise over overlapping intervals is consistent; without a noise sampler they
build an unseeded one. DPM fast and DPM adaptive are DPM-Solver (Lu et al. 2022) in log-SNR time ``t = -log sigma``;
here they take ``sigmas`` like the others and use only its range (smallest non-zero and largest sigma) and, for DPM
fast, its number of steps as the model-evaluation budget, which is what A1111 passes them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm, trange

from modules.samplers.kdiffusion import Callback, Model, get_ancestral_step, to_d
from modules.samplers.noise import BrownianTreeNoiseSampler, NoiseSampler, default_noise_sampler


def _sigma_range(sigmas: Tensor) -> tuple[Tensor, Tensor]:
    return sigmas[sigmas > 0].min(), sigmas.max()


def _brownian_default(x: Tensor, sigmas: Tensor, noise_sampler: NoiseSampler | None) -> NoiseSampler:
    if noise_sampler is not None:
        return noise_sampler
    sigma_min, sigma_max = _sigma_range(sigmas)
    return BrownianTreeNoiseSampler(x, sigma_min, sigma_max)


def _sigma_fn(t: Tensor) -> Tensor:
    return t.neg().exp()


def _t_fn(sigma: Tensor) -> Tensor:
    return sigma.log().neg()


def _report(callback: Callback | None, x: Tensor, i: int, sigma: Tensor, denoised: Tensor) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})


@torch.no_grad()
def sample_dpmpp_sde(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    r: float = 1 / 2,
) -> Tensor:
    """DPM-Solver++ stochastic, two model calls a step (the second at fraction ``r`` of the step in log sigma)."""
    noise_sampler = _brownian_default(x, sigmas, noise_sampler)
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = _t_fn(sigmas[i]), _t_fn(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        fac = 1 / (2 * r)
        # First stage: ancestral step to the intermediate point s.
        sd, su = get_ancestral_step(_sigma_fn(t), _sigma_fn(s), eta)
        s_ = _t_fn(sd)
        x_2 = (_sigma_fn(s_) / _sigma_fn(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + noise_sampler(_sigma_fn(t), _sigma_fn(s)) * s_noise * su
        denoised_2 = model(x_2, _sigma_fn(s) * s_in, **extra_args)
        # Second stage: full ancestral step with the blended estimate.
        sd, su = get_ancestral_step(_sigma_fn(t), _sigma_fn(t_next), eta)
        t_next_ = _t_fn(sd)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (_sigma_fn(t_next_) / _sigma_fn(t)) * x - (t - t_next_).expm1() * denoised_d
        x = x + noise_sampler(_sigma_fn(t), _sigma_fn(t_next)) * s_noise * su
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    solver_type: str = "midpoint",
) -> Tensor:
    """DPM-Solver++(2M) SDE; ``solver_type`` "midpoint" (DPM++ 2M SDE) or "heun" (DPM++ 2M SDE Heun)."""
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    noise_sampler = _brownian_default(x, sigmas, noise_sampler)
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    old_denoised: Tensor | None = None
    h_last: Tensor | None = None
    h: Tensor | None = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    phi = (-h - eta_h).expm1().neg() / (-h - eta_h) + 1
                    x = x + phi * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta:
                noise = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() * s_noise
        old_denoised = denoised
        h_last = h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(
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
    """DPM-Solver++(3M) SDE: third-order multistep over the last three estimates."""
    noise_sampler = _brownian_default(x, sigmas, noise_sampler)
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    denoised_1: Tensor | None = None
    denoised_2: Tensor | None = None
    h: Tensor | None = None
    h_1: Tensor | None = None
    h_2: Tensor | None = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                d = (denoised - denoised_1) / (h_1 / h)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + phi_2 * d
            if eta:
                noise = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


class _DPMSolver:
    """DPM-Solver-1/2/3 steps in t = -log sigma, with the eps estimates of one step cached by stage."""

    def __init__(self, model: Model, x: Tensor, extra_args: dict[str, Any], on_eval: Any = None) -> None:
        self.model = model
        self.extra_args = extra_args
        self.s_in = x.new_ones([x.shape[0]])
        self.on_eval = on_eval

    @staticmethod
    def t(sigma: Tensor) -> Tensor:
        return -sigma.log()

    @staticmethod
    def sigma(t: Tensor) -> Tensor:
        return t.neg().exp()

    def eps(self, cache: dict[str, Tensor], key: str, x: Tensor, t: Tensor) -> Tensor:
        if key not in cache:
            sigma = self.sigma(t)
            cache[key] = (x - self.model(x, sigma * self.s_in, **self.extra_args)) / sigma
            if self.on_eval is not None:
                self.on_eval()
        return cache[key]

    def step_1(self, x: Tensor, t: Tensor, t_next: Tensor, cache: dict[str, Tensor]) -> Tensor:
        h = t_next - t
        return x - self.sigma(t_next) * h.expm1() * self.eps(cache, "eps", x, t)

    def step_2(self, x: Tensor, t: Tensor, t_next: Tensor, cache: dict[str, Tensor], r1: float = 1 / 2) -> Tensor:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, x: Tensor, t: Tensor, t_next: Tensor, cache: dict[str, Tensor]) -> Tensor:
        r1, r2 = 1 / 3, 2 / 3
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (
            x
            - self.sigma(s2) * (r2 * h).expm1() * eps
            - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        )
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)

    def ancestral_target(self, t: Tensor, t_next: Tensor, t_end: Tensor, eta: float) -> tuple[Tensor, Tensor | float]:
        """Where the deterministic part of a step lands and how much noise is added after it."""
        if not eta:
            return t_next, 0.0
        sd, _ = get_ancestral_step(self.sigma(t), self.sigma(t_next), eta)
        t_next_ = torch.minimum(t_end, self.t(sd))
        su = (self.sigma(t_next) ** 2 - self.sigma(t_next_) ** 2) ** 0.5
        return t_next_, su


@torch.no_grad()
def sample_dpm_fast(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    eta: float = 0.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DPM-Solver-Fast: fixed steps of order 3 (then 2, 1) spending ``len(sigmas) - 1`` model calls in all."""
    sigma_min, sigma_max = _sigma_range(sigmas)
    nfe = len(sigmas) - 1
    noise_sampler = noise_sampler if noise_sampler is not None else default_noise_sampler(x)
    solver = _DPMSolver(model, x, extra_args or {})
    t_start, t_end = solver.t(sigma_max), solver.t(sigma_min)
    m = math.floor(nfe / 3) + 1
    ts = torch.linspace(float(t_start), float(t_end), m + 1, device=x.device, dtype=sigmas.dtype)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    for i in trange(len(orders), disable=disable):
        cache: dict[str, Tensor] = {}
        t, t_next = ts[i], ts[i + 1]
        t_next_, su = solver.ancestral_target(t, t_next, t_end, eta)
        eps = solver.eps(cache, "eps", x, t)
        if callback is not None:
            denoised = x - solver.sigma(t) * eps
            sigma = solver.sigma(t)
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        step = {1: solver.step_1, 2: solver.step_2, 3: solver.step_3}[orders[i]]
        x = step(x, t, t_next_, cache)
        if eta:
            x = x + su * s_noise * noise_sampler(solver.sigma(t), solver.sigma(t_next))
    return x


class _PIDStepSizeController:
    """PID control of the step size from the error estimate (Söderlind), accepting steps above a safety factor."""

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float, accept_safety: float):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = 1e-8
        self.errs: list[float] = []

    def propose_step(self, error: Tensor) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


@torch.no_grad()
def sample_dpm_adaptive(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    pcoeff: float = 0.0,
    icoeff: float = 1.0,
    dcoeff: float = 0.0,
    accept_safety: float = 0.81,
    eta: float = 0.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DPM-Solver-12/23 with adaptive step size between the schedule's extreme sigmas; ignores the step count.

    The error norm is taken over the whole batch, so (as in k-diffusion) an image's steps depend on its batch.
    """
    if order not in {2, 3}:
        raise ValueError("order should be 2 or 3")
    sigma_min, sigma_max = _sigma_range(sigmas)
    noise_sampler = noise_sampler if noise_sampler is not None else default_noise_sampler(x)
    with tqdm(disable=disable) as progress:
        solver = _DPMSolver(model, x, extra_args or {}, on_eval=lambda: progress.update())
        s, t_end = solver.t(sigma_max), solver.t(sigma_min)
        atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
        x_prev = x
        pid = _PIDStepSizeController(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
        steps = 0
        while s < t_end - 1e-5:
            cache: dict[str, Tensor] = {}
            t = torch.minimum(t_end, s + pid.h)
            t_, su = solver.ancestral_target(s, t, t_end, eta)
            eps = solver.eps(cache, "eps", x, s)
            denoised = x - solver.sigma(s) * eps
            if order == 2:
                x_low = solver.step_1(x, s, t_, cache)
                x_high = solver.step_2(x, s, t_, cache)
            else:
                x_low = solver.step_2(x, s, t_, cache, r1=1 / 3)
                x_high = solver.step_3(x, s, t_, cache)
            delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
            error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
            if pid.propose_step(error):
                x_prev = x_low
                x = x_high
                if eta:
                    x = x + su * s_noise * noise_sampler(solver.sigma(s), solver.sigma(t))
                s = t
            steps += 1
            if callback is not None:
                sigma = solver.sigma(s)
                callback({"x": x, "i": steps - 1, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
    return x
