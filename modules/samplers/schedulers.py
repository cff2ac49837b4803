"""A1111's noise schedulers ("Schedule type"): how the n sampling steps are spread over the noise levels.

Each function takes ``n`` (steps) and the model's sigma range and returns a descending float32 tensor of sigmas that
A1111 would produce for the same inputs. Most return n + 1 values ending in 0; two A1111 quirks are kept on purpose,
because A1111 images depend on them: "KL Optimal" ends at ``sigma_min`` rather than 0, and "DDIM" returns
``ceil(999 / (1000 // n)) + 1`` values (31 + 1 for 30 steps), so a sampler runs that many steps.

Schedulers marked ``need_inner_model`` read the model's own discrete table (any ``SigmaSchedule``: ``sigmas``,
``sigma_to_t``, ``t_to_sigma``). "Automatic" has no function: the caller uses the sampler's preferred scheduler, or
the model's own sigmas (``denoiser.model_sigmas``). ``compute_sigmas`` applies A1111's argument rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from modules.samplers.denoiser import SigmaSchedule, append_zero, model_sigmas

Device = torch.device | str

# Align Your Steps (Sabour et al. 2024) 10-step schedules, as published on NVIDIA's "how to" page and used by A1111.
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: Device = "cpu") -> Tensor:
    """Karras et al. (2022): evenly spaced in sigma^(1/rho), so steps crowd towards low noise."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho).to(device)


def exponential(n: int, sigma_min: float, sigma_max: float, device: Device = "cpu") -> Tensor:
    """Evenly spaced in log sigma."""
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp()).to(device)


def polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, device: Device = "cpu") -> Tensor:
    """Log sigma following a power ``rho`` of a linear ramp (rho 1 is ``exponential``)."""
    ramp = torch.linspace(1, 0, n) ** rho
    log_min = math.log(sigma_min)
    return append_zero(torch.exp(ramp * (math.log(sigma_max) - log_min) + log_min)).to(device)


def uniform(n: int, sigma_min: float, sigma_max: float, inner_model: SigmaSchedule, device: Device = "cpu") -> Tensor:
    """The model's own schedule: timesteps evenly spaced from the last to the first (ignores the sigma range)."""
    return model_sigmas(inner_model, n, device)


def _t_of(inner_model: SigmaSchedule, sigma: float) -> float:
    return float(inner_model.sigma_to_t(torch.tensor(sigma, dtype=torch.float64)))


def _sigmas_at(inner_model: SigmaSchedule, t: Tensor, device: Device) -> Tensor:
    return append_zero(inner_model.t_to_sigma(t).to(torch.float32)).to(device)


def sgm_uniform(
    n: int, sigma_min: float, sigma_max: float, inner_model: SigmaSchedule, device: Device = "cpu"
) -> Tensor:
    """SGM/SDXL "trailing" spacing: n + 1 even timesteps over the sigma range, dropping the last."""
    start, end = _t_of(inner_model, sigma_max), _t_of(inner_model, sigma_min)
    return _sigmas_at(inner_model, torch.linspace(start, end, n + 1, dtype=torch.float64)[:-1], device)


def normal(n: int, sigma_min: float, sigma_max: float, inner_model: SigmaSchedule, device: Device = "cpu") -> Tensor:
    """n timesteps evenly spaced over the sigma range, both ends included."""
    start, end = _t_of(inner_model, sigma_max), _t_of(inner_model, sigma_min)
    return _sigmas_at(inner_model, torch.linspace(start, end, n, dtype=torch.float64), device)


def kl_optimal(n: int, sigma_min: float, sigma_max: float, device: Device = "cpu") -> Tensor:
    """KL Optimal (Sabour et al. 2024): evenly spaced in arctan(sigma). A1111's version: n + 1 values from
    sigma_max down to sigma_min, with no trailing 0."""
    alpha_min = torch.arctan(torch.tensor(sigma_min))
    alpha_max = torch.arctan(torch.tensor(sigma_max))
    fraction = torch.arange(n + 1) / n
    return torch.tan(fraction * alpha_min + (1.0 - fraction) * alpha_max).to(device)


def loglinear_interp(values: Sequence[float], num_steps: int) -> np.ndarray:
    """Resample a decreasing sequence to ``num_steps`` points, interpolating linearly in log space."""
    xs = np.linspace(0, 1, len(values))
    ys = np.log(np.asarray(values, dtype=np.float64)[::-1])
    new_ys = np.interp(np.linspace(0, 1, num_steps), xs, ys)
    return np.exp(new_ys)[::-1].copy()


def align_your_steps(
    n: int, sigma_min: float, sigma_max: float, is_sdxl: bool = False, device: Device = "cpu"
) -> Tensor:
    """Align Your Steps: NVIDIA's optimised 10-step table for SD1.5 or SDXL, log-linearly resampled to n steps."""
    table = AYS_SDXL if is_sdxl else AYS_SD15
    values = list(table) if n == len(table) else list(loglinear_interp(table, n))
    return torch.tensor([*values, 0.0], dtype=torch.float32, device=device)


def simple(n: int, sigma_min: float, sigma_max: float, inner_model: SigmaSchedule, device: Device = "cpu") -> Tensor:
    """Every (N / n)-th entry of the model's table, from the top (ComfyUI's "simple")."""
    table = inner_model.sigmas
    stride = len(table) / n
    picked = [float(table[-(1 + int(i * stride))]) for i in range(n)]
    return torch.tensor([*picked, 0.0], dtype=torch.float32, device=device)


def ddim(n: int, sigma_min: float, sigma_max: float, inner_model: SigmaSchedule, device: Device = "cpu") -> Tensor:
    """Table entries 1, 1 + k, 1 + 2k, ... (k = N // n), reversed: DDIM's timesteps as sigmas (see module doc)."""
    table = inner_model.sigmas
    stride = max(len(table) // n, 1)
    picked = [float(table[i]) for i in range(1, len(table), stride)][::-1]
    return torch.tensor([*picked, 0.0], dtype=torch.float32, device=device)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-16:
            break
    return math.exp(log_front) * result / a


def beta_ppf(q: float, a: float, b: float) -> float:
    """Quantile of the Beta(a, b) distribution (scipy's ``beta.ppf``) by safeguarded Newton iteration."""
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    log_norm = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    low, high, x = 0.0, 1.0, 0.5
    for _ in range(200):
        f = _betainc(a, b, x) - q
        if f > 0:
            high = x
        else:
            low = x
        density = math.exp((a - 1) * math.log(x) + (b - 1) * math.log1p(-x) - log_norm)
        step = x - f / density if density > 0 else -1.0
        x_new = step if low < step < high else (low + high) / 2
        if abs(x_new - x) <= 1e-15 * max(x, 1e-300) or high - low < 1e-16:
            return x_new
        x = x_new
    return x


def beta(
    n: int,
    sigma_min: float,
    sigma_max: float,
    inner_model: SigmaSchedule | None = None,
    device: Device = "cpu",
    dist_alpha: float = 0.6,
    dist_beta: float = 0.6,
) -> Tensor:
    """Beta schedule ("Beta Sampling is All You Need", Lee et al. 2024): Beta(alpha, beta) quantiles mapped
    linearly onto [sigma_min, sigma_max], spending more steps at both ends (``inner_model`` unused, as in A1111)."""
    quantiles = [beta_ppf(float(q), dist_alpha, dist_beta) for q in 1 - np.linspace(0, 1, n)]
    picked = [sigma_min + q * (sigma_max - sigma_min) for q in quantiles]
    return torch.tensor([*picked, 0.0], dtype=torch.float32, device=device)


@dataclass(frozen=True)
class Scheduler:
    """One "Schedule type" entry: A1111's ``sd_schedulers.Scheduler`` plus a flag for the model family."""

    name: str
    label: str
    function: Callable[..., Tensor] | None
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: tuple[str, ...] = field(default_factory=tuple)
    need_is_sdxl: bool = False


schedulers: list[Scheduler] = [
    Scheduler("automatic", "Automatic", None),
    Scheduler("uniform", "Uniform", uniform, need_inner_model=True),
    Scheduler("karras", "Karras", karras, default_rho=7.0),
    Scheduler("exponential", "Exponential", exponential),
    Scheduler("polyexponential", "Polyexponential", polyexponential, default_rho=1.0),
    Scheduler("sgm_uniform", "SGM Uniform", sgm_uniform, need_inner_model=True, aliases=("SGMUniform",)),
    Scheduler("kl_optimal", "KL Optimal", kl_optimal),
    Scheduler("align_your_steps", "Align Your Steps", align_your_steps, need_is_sdxl=True),
    Scheduler("simple", "Simple", simple, need_inner_model=True),
    Scheduler("normal", "Normal", normal, need_inner_model=True),
    Scheduler("ddim", "DDIM", ddim, need_inner_model=True),
    Scheduler("beta", "Beta", beta, need_inner_model=True),
]

# A1111's map: names and labels, exact.
schedulers_map: dict[str, Scheduler] = {**{s.name: s for s in schedulers}, **{s.label: s for s in schedulers}}


def find_scheduler(name: str | None) -> Scheduler:
    """Scheduler by name, label or alias, case-insensitively; None or "" means Automatic."""
    if not name:
        return schedulers[0]
    wanted = name.strip().lower()
    for scheduler in schedulers:
        if wanted in {scheduler.name.lower(), scheduler.label.lower(), *(a.lower() for a in scheduler.aliases)}:
            return scheduler
    labels = ", ".join(s.label for s in schedulers)
    raise ValueError(f"unknown scheduler {name!r}; valid schedulers: {labels}")


def compute_sigmas(
    scheduler: Scheduler | str,
    n: int,
    schedule: SigmaSchedule,
    *,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float | None = None,
    is_sdxl: bool = False,
    beta_alpha: float = 0.6,
    beta_beta: float = 0.6,
    device: Device = "cpu",
) -> Tensor:
    """Sigmas for n steps with A1111's argument rules.

    sigma_min/sigma_max default to the model's range (0 or None means "model's", like A1111's settings); ``rho`` is
    used only by schedulers that have one; "Automatic" (no function) gives the model's own sigmas.
    """
    if isinstance(scheduler, str):
        scheduler = find_scheduler(scheduler)
    if scheduler.function is None:
        return model_sigmas(schedule, n, device)
    kwargs: dict[str, object] = {
        "sigma_min": float(sigma_min) if sigma_min else float(schedule.sigmas[0]),
        "sigma_max": float(sigma_max) if sigma_max else float(schedule.sigmas[-1]),
        "device": device,
    }
    if scheduler.default_rho != -1 and rho and rho != scheduler.default_rho:
        kwargs["rho"] = float(rho)
    if scheduler.need_inner_model:
        kwargs["inner_model"] = schedule
    if scheduler.need_is_sdxl:
        kwargs["is_sdxl"] = is_sdxl
    if scheduler.name == "beta":
        kwargs["dist_alpha"], kwargs["dist_beta"] = beta_alpha, beta_beta
    return scheduler.function(n, **kwargs)
