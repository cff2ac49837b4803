"""Denoisers: turn a UNet that predicts noise (or v) at a discrete timestep into k-diffusion's ``D(x, sigma) -> x0``.

k-diffusion samplers work in the variance-exploding view ``x = x0 + sigma * noise`` and only ever ask for the
denoised estimate at some sigma. SD checkpoints were trained on ``sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * noise``
at integer timesteps; the two views agree after scaling the input by ``c_in = 1 / sqrt(sigma^2 + 1)`` and mapping
sigma to a (fractional) timestep. ``DiscreteDenoiser`` is the equivalent of k-diffusion's ``CompVisDenoiser`` (eps
models) and ``CompVisVDenoiser`` (v models), picking the variant from ``schedule.prediction``.

``LCMSchedule``/``LCMDenoiser`` reproduce A1111's LCM denoiser: LCM checkpoints were distilled on 50 of the 1000
timesteps and apply the consistency-model boundary condition to their output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor

from modules.sd.schedule import DiscreteSchedule

ModelFn = Callable[..., Tensor]


class SigmaSchedule(Protocol):
    """What schedulers and denoisers need from a model's noise table (``DiscreteSchedule`` satisfies it)."""

    sigmas: Tensor
    prediction: str

    def sigma_to_t(self, sigma: Tensor, quantize: bool = False) -> Tensor: ...

    def t_to_sigma(self, t: Tensor) -> Tensor: ...


def append_dims(x: Tensor, target_dims: int) -> Tensor:
    """Add trailing singleton dims so a per-row vector broadcasts against a batch of latents."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"tensor has {x.ndim} dims, more than the target {target_dims}")
    return x[(...,) + (None,) * missing]


def append_zero(sigmas: Tensor) -> Tensor:
    """Samplers end on sigma 0: the final step returns the fully denoised estimate."""
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def model_sigmas(schedule: SigmaSchedule, n: int | None = None, device: torch.device | str = "cpu") -> Tensor:
    """The model's own n sigmas (k-diffusion's ``DiscreteSchedule.get_sigmas``), descending, ending in 0, float32.

    Timesteps spaced evenly from N-1 down to 0 (fractional ones interpolated in log sigma). A1111 uses this for
    "Automatic" when the sampler names no scheduler, and for "Uniform". A schedule with its own ``get_sigmas``
    (``LCMSchedule``) is asked directly.
    """
    own = getattr(schedule, "get_sigmas", None)
    if own is not None:
        return own(n).to(device, torch.float32)
    table = schedule.sigmas.to(torch.float64)
    if n is None:
        return append_zero(table.flip(0)).to(device, torch.float32)
    t = torch.linspace(table.shape[0] - 1, 0, n, dtype=torch.float64)
    return append_zero(schedule.t_to_sigma(t).to(torch.float64)).to(device, torch.float32)


class DiscreteDenoiser:
    """``D(x, sigma)`` for an eps- or v-predicting model trained on a ``DiscreteSchedule``.

    ``model_fn(x * c_in, t, **kwargs)`` is called with t = ``schedule.sigma_to_t(sigma)`` (fractional unless
    ``quantize``) and must return eps or v for the batch. The result is the x0 estimate, in x's dtype.
    """

    def __init__(self, model_fn: ModelFn, schedule: SigmaSchedule, quantize: bool = False) -> None:
        self.inner_model = model_fn
        self.schedule = schedule
        self.quantize = quantize
        self.prediction = schedule.prediction
        self.sigma_data = 1.0

    @property
    def sigmas(self) -> Tensor:
        return self.schedule.sigmas

    @property
    def sigma_min(self) -> float:
        return float(self.schedule.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.schedule.sigmas[-1])

    def sigma_to_t(self, sigma: Tensor, quantize: bool | None = None) -> Tensor:
        """Timestep the model was trained at for this noise level."""
        return self.schedule.sigma_to_t(sigma, self.quantize if quantize is None else quantize)

    def t_to_sigma(self, t: Tensor) -> Tensor:
        return self.schedule.t_to_sigma(t)

    def get_sigmas(self, n: int | None = None) -> Tensor:
        """The model's default n-step sigmas (k-diffusion's default "Automatic" schedule)."""
        return model_sigmas(self.schedule, n)

    def get_scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in) so that ``x0 = c_skip * x + c_out * model(c_in * x)``."""
        c_in = 1 / (sigma**2 + self.sigma_data**2) ** 0.5
        if self.prediction == "v_prediction":
            c_skip = self.sigma_data**2 / (sigma**2 + self.sigma_data**2)
            c_out = -sigma * self.sigma_data / (sigma**2 + self.sigma_data**2) ** 0.5
        else:
            c_skip = torch.ones_like(sigma)
            c_out = -sigma
        return c_skip, c_out, c_in

    def __call__(self, x: Tensor, sigma: Tensor, **kwargs: Any) -> Tensor:
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in self.get_scalings(sigma))
        out = self.inner_model(x * c_in, self.sigma_to_t(sigma), **kwargs)
        if self.prediction == "v_prediction":
            return out * c_out + x * c_skip
        return x + out * c_out


class LCMSchedule:
    """The 50-timestep table an LCM checkpoint was distilled on (timesteps 19, 39, ..., 999 of 1000).

    ``sigma_to_t`` snaps to the nearest of those 50 sigmas and returns its original (integer) timestep;
    ``t_to_sigma`` interpolates in log sigma between them; ``get_sigmas`` spaces timesteps evenly over the table.
    """

    def __init__(self, schedule: DiscreteSchedule, original_steps: int = 50) -> None:
        total = schedule.num_timesteps
        self.skip_steps = total // original_steps
        timesteps = torch.arange(original_steps) * self.skip_steps + (self.skip_steps - 1)
        self.prediction = schedule.prediction
        self.base = DiscreteSchedule(schedule.alphas_cumprod[timesteps], schedule.prediction)
        self.sigmas = self.base.sigmas

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: Tensor, quantize: bool = True) -> Tensor:
        index = self.base.sigma_to_t(sigma, quantize=True)
        return index * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, t: Tensor) -> Tensor:
        index = ((t.to(torch.float64) - (self.skip_steps - 1)) / self.skip_steps).clamp(0, self.sigmas.shape[0] - 1)
        return self.base.t_to_sigma(index).to(t.dtype if t.is_floating_point() else torch.float32)

    def get_sigmas(self, n: int | None = None) -> Tensor:
        if n is None:
            return append_zero(self.sigmas.flip(0)).to(torch.float32)
        start = self.sigma_to_t(torch.tensor(self.sigma_max, dtype=torch.float64))
        end = self.sigma_to_t(torch.tensor(self.sigma_min, dtype=torch.float64))
        t = torch.linspace(float(start), float(end), n, dtype=torch.float64)
        return append_zero(self.t_to_sigma(t)).to(torch.float32)


class LCMDenoiser(DiscreteDenoiser):
    """A1111's LCM denoiser: eps model on the LCM timestep table, then the consistency boundary condition.

    The boundary condition ``c_skip(t) x + c_out(t) x0`` (sigma_data 0.5, timestep scaled by 10) is what LCM was
    distilled with; without it, LCM checkpoints give washed-out images.
    """

    def __init__(self, model_fn: ModelFn, schedule: DiscreteSchedule, original_steps: int = 50) -> None:
        super().__init__(model_fn, LCMSchedule(schedule, original_steps), quantize=True)
        self.prediction = "epsilon"

    def __call__(self, x: Tensor, sigma: Tensor, **kwargs: Any) -> Tensor:
        denoised = super().__call__(x, sigma, **kwargs)
        sigma_data = 0.5
        scaled_t = append_dims(self.sigma_to_t(sigma), x.ndim).to(x.dtype) * 10.0
        c_skip = sigma_data**2 / (scaled_t**2 + sigma_data**2)
        c_out = scaled_t / (scaled_t**2 + sigma_data**2) ** 0.5
        return c_out * denoised + c_skip * x
