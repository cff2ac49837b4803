"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework"), multistep, data prediction.

This follows the sampler A1111 ships (``models/diffusion/uni_pc``, from the authors' code) as A1111 drives it:
``predict_x0=True``, no thresholding, ``method="multistep"``, and the ``uni_pc_*`` settings (variant bh1, skip type
time_uniform, order 3, lower_order_final on). The discrete schedule is seen in continuous time as DPM-Solver does:
timestep n sits at t = (n + 1) / N and log(alpha_t) = log(sqrt(alpha_bar)) is interpolated linearly in t, so the
model is evaluated at fractional timesteps (for 20 steps: 999, 949.05, 899.1, ...). Steps come from a grid of
``steps + 1`` times from t_T = 1 (or the img2img start) down to t_0 = 1 / N.

Like the other timestep samplers (:mod:`modules.samplers.timesteps`), ``x`` is a VP latent and ``model`` is a
k-diffusion denoiser ``model(x_t / alpha_t, sigma_t / alpha_t, **extra_args) -> x0``. One model call per step; the
corrector reuses the prediction at the predicted point as the next step's history, which is UniPC's trick.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

Denoiser = Callable[..., Tensor]
StepCallback = Callable[[dict[str, Any]], None]
Variant = Literal["bh1", "bh2", "vary_coeff"]
SkipType = Literal["time_uniform", "time_quadratic", "logSNR"]


class ContinuousVPSchedule:
    """DPM-Solver's continuous-time view of a discrete schedule: alpha_t, sigma_t, lambda_t for t in (0, 1]."""

    def __init__(self, alphas_cumprod: Tensor) -> None:
        table = alphas_cumprod.detach().to("cpu", torch.float64)
        self.total_n = table.shape[0]
        self.t_knots = torch.linspace(0.0, 1.0, self.total_n + 1, dtype=torch.float64)[1:]
        self.log_alphas = 0.5 * table.log()

    @staticmethod
    def _interpolate(x: float, xp: Tensor, fp: Tensor) -> float:
        """Piecewise-linear f(x) through (xp, fp), xp ascending; the end segments extend beyond the knots."""
        i = int(torch.searchsorted(xp, torch.tensor([x], dtype=xp.dtype), right=True)[0]) - 1
        i = min(max(i, 0), xp.shape[0] - 2)
        x0, x1, f0, f1 = float(xp[i]), float(xp[i + 1]), float(fp[i]), float(fp[i + 1])
        return f0 + (x - x0) * (f1 - f0) / (x1 - x0)

    def log_alpha(self, t: float) -> float:
        return self._interpolate(t, self.t_knots, self.log_alphas)

    def alpha(self, t: float) -> float:
        return math.exp(self.log_alpha(t))

    def sigma(self, t: float) -> float:
        return math.sqrt(1.0 - math.exp(2.0 * self.log_alpha(t)))

    def lambda_(self, t: float) -> float:
        """Half log-SNR: log(alpha_t / sigma_t)."""
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * math.log(1.0 - math.exp(2.0 * log_alpha))

    def t_of_lambda(self, lamb: float) -> float:
        log_alpha = -0.5 * math.log1p(math.exp(-2.0 * lamb))
        return self._interpolate(log_alpha, self.log_alphas.flip(0), self.t_knots.flip(0))

    def time_grid(self, skip_type: SkipType, t_start: float, t_end: float, steps: int) -> list[float]:
        """The ``steps + 1`` times the solver visits, from t_start down to t_end."""
        if skip_type == "time_uniform":
            return torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64).tolist()
        if skip_type == "time_quadratic":
            return (torch.linspace(t_start**0.5, t_end**0.5, steps + 1, dtype=torch.float64) ** 2).tolist()
        if skip_type == "logSNR":
            lambdas = torch.linspace(self.lambda_(t_start), self.lambda_(t_end), steps + 1, dtype=torch.float64)
            return [self.t_of_lambda(float(lamb)) for lamb in lambdas]
        raise ValueError(f"unknown UniPC skip type {skip_type!r}")


def _weighted_sum(weights: Tensor, tensors: list[Tensor]) -> Tensor:
    total = float(weights[0]) * tensors[0]
    for weight, tensor in zip(weights[1:].tolist(), tensors[1:], strict=True):
        total = total + weight * tensor
    return total


def _bh_update(
    model_fn: Callable[[Tensor, float], Tensor],
    ns: ContinuousVPSchedule,
    x: Tensor,
    history: list[Tensor],
    t_history: list[float],
    t: float,
    order: int,
    variant: Variant,
    use_corrector: bool,
) -> tuple[Tensor, Tensor | None]:
    """One UniPC step (UniP-``order`` predictor, then UniC unless ``use_corrector`` is false) for the B(h) variants."""
    t_prev = t_history[-1]
    model_prev = history[-1]
    lambda_prev, lambda_t = ns.lambda_(t_prev), ns.lambda_(t)
    h = lambda_t - lambda_prev
    alpha_t, sigma_t, sigma_prev = ns.alpha(t), ns.sigma(t), ns.sigma(t_prev)

    rks, d1s = [], []
    for i in range(1, order):
        rk = (ns.lambda_(t_history[-(i + 1)]) - lambda_prev) / h
        rks.append(rk)
        d1s.append((history[-(i + 1)] - model_prev) / rk)
    rks.append(1.0)
    rks_t = torch.tensor(rks, dtype=torch.float64)

    hh = -h  # data prediction integrates in -lambda
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(rks_t ** (i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    r_mat, b_vec = torch.stack(rows), torch.tensor(b, dtype=torch.float64)

    x_base = (sigma_t / sigma_prev) * x - (alpha_t * h_phi_1) * model_prev
    x_t = x_base
    if d1s:
        half = torch.tensor([0.5], dtype=torch.float64)
        rhos_p = half if order == 2 else torch.linalg.solve(r_mat[:-1, :-1], b_vec[:-1])
        x_t = x_base - (alpha_t * b_h) * _weighted_sum(rhos_p, d1s)
    if not use_corrector:
        return x_t, None
    rhos_c = torch.tensor([0.5], dtype=torch.float64) if order == 1 else torch.linalg.solve(r_mat, b_vec)
    model_t = model_fn(x_t, t)
    correction = float(rhos_c[-1]) * (model_t - model_prev)
    if d1s:
        correction = correction + _weighted_sum(rhos_c[:-1], d1s)
    return x_base - (alpha_t * b_h) * correction, model_t


def _vary_coeff_update(
    model_fn: Callable[[Tensor, float], Tensor],
    ns: ContinuousVPSchedule,
    x: Tensor,
    history: list[Tensor],
    t_history: list[float],
    t: float,
    order: int,
    use_corrector: bool,
) -> tuple[Tensor, Tensor | None]:
    """The "vary_coeff" variant: coefficients from inverting the Taylor matrix C[i, k] = r_i^k / (k + 1)!."""
    t_prev = t_history[-1]
    model_prev = history[-1]
    lambda_prev = ns.lambda_(t_prev)
    h = ns.lambda_(t) - lambda_prev
    alpha_t, sigma_t, sigma_prev = ns.alpha(t), ns.sigma(t), ns.sigma(t_prev)

    rks, d1s = [], []
    for i in range(1, order):
        rk = (ns.lambda_(t_history[-(i + 1)]) - lambda_prev) / h
        rks.append(rk)
        d1s.append((history[-(i + 1)] - model_prev) / rk)
    rks.append(1.0)
    rks_t = torch.tensor(rks, dtype=torch.float64)
    k_len = len(rks)
    cols, col = [], torch.ones_like(rks_t)
    for k in range(1, k_len + 1):
        cols.append(col)
        col = col * rks_t / (k + 1)
    c_mat = torch.stack(cols, dim=1)

    hh = -h
    h_phi_ks, h_phi_k, factorial = [], math.expm1(hh), 1
    for k in range(1, k_len + 2):
        h_phi_ks.append(h_phi_k)
        h_phi_k = h_phi_k / hh - 1 / factorial
        factorial *= k + 1

    x_base = (sigma_t / sigma_prev) * x - (alpha_t * h_phi_ks[0]) * model_prev
    x_t = x_base
    if d1s:
        a_p = torch.linalg.inv(c_mat[:-1, :-1])
        for k in range(k_len - 1):
            x_t = x_t - (alpha_t * h_phi_ks[k + 1]) * _weighted_sum(a_p[k], d1s)
    if not use_corrector:
        return x_t, None
    a_c = torch.linalg.inv(c_mat)
    model_t = model_fn(x_t, t)
    x_t = x_base
    for k in range(k_len - 1):
        x_t = x_t - (alpha_t * h_phi_ks[k + 1]) * _weighted_sum(a_c[k][:-1], d1s)
    # The reference reuses the loop's last k here (0 when the loop is empty); kept for identical results.
    last_row = a_c[max(k_len - 2, 0)]
    x_t = x_t - (alpha_t * h_phi_ks[k_len]) * (float(last_row[-1]) * (model_t - model_prev))
    return x_t, model_t


@torch.no_grad()
def sample_unipc(
    model: Denoiser,
    x: Tensor,
    timesteps: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    *,
    alphas_cumprod: Tensor,
    is_img2img: bool = False,
    order: int = 3,
    variant: Variant = "bh1",
    skip_type: SkipType = "time_uniform",
    lower_order_final: bool = True,
) -> Tensor:
    """Multistep UniPC over ``len(timesteps)`` steps (one model call each), A1111's defaults.

    For img2img, ``timesteps`` are the truncated schedule and sampling starts at ``timesteps[-1] / N + 1 / N``.
    ``order`` is capped at the number of steps (A1111 refuses instead).
    """
    if variant not in ("bh1", "bh2", "vary_coeff"):
        raise ValueError(f"unknown UniPC variant {variant!r}")
    extra_args = extra_args or {}
    ns = ContinuousVPSchedule(alphas_cumprod)
    steps = len(timesteps)
    if steps < 1:
        return x
    order = max(1, min(order, steps))
    t_end = 1.0 / ns.total_n
    t_start = float(timesteps[-1]) / ns.total_n + 1.0 / ns.total_n if is_img2img else 1.0
    times = ns.time_grid(skip_type, t_start, t_end, steps)
    s_in = torch.ones((x.shape[0],), dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)

    def model_fn(x_t: Tensor, t: float) -> Tensor:
        alpha = ns.alpha(t)
        return model(x_t / alpha, (ns.sigma(t) / alpha) * s_in, **extra_args)

    def update(x_t: Tensor, t: float, step_order: int, use_corrector: bool) -> tuple[Tensor, Tensor | None]:
        if variant == "vary_coeff":
            return _vary_coeff_update(model_fn, ns, x_t, history, t_history, t, step_order, use_corrector)
        return _bh_update(model_fn, ns, x_t, history, t_history, t, step_order, variant, use_corrector)

    progress = tqdm(total=steps, disable=disable)
    step_index = 0

    def report(x_t: Tensor, denoised: Tensor | None, t: float) -> None:
        nonlocal step_index
        if callback is not None:
            sigma = ns.sigma(t) / ns.alpha(t)
            d = x_t if denoised is None else denoised
            callback({"x": x_t, "i": step_index, "sigma": sigma, "sigma_hat": sigma, "denoised": d})
        step_index += 1
        progress.update(1)

    history, t_history = [model_fn(x, times[0])], [times[0]]
    for warmup_order in range(1, order):  # lower orders until enough history exists
        t = times[warmup_order]
        x, model_x = update(x, t, warmup_order, True)
        model_x = model_fn(x, t) if model_x is None else model_x
        report(x, model_x, t)
        history.append(model_x)
        t_history.append(t)
    for step in range(order, steps + 1):
        t = times[step]
        step_order = min(order, steps + 1 - step) if lower_order_final else order
        last = step == steps
        x, model_x = update(x, t, step_order, not last)
        report(x, model_x, t)
        history, t_history = history[1:] + history[-1:], t_history[1:] + [t]
        if not last:
            history[-1] = model_fn(x, t) if model_x is None else model_x
    progress.close()
    return x
