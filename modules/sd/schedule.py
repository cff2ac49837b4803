"""The discrete DDPM noise schedule that SD1, SD2 and SDXL were trained with, seen as k-diffusion sigmas.

All three families use LDM's "linear" schedule (diffusers calls it ``scaled_linear``): betas linear in sqrt space
from 0.00085 to 0.012 over 1000 steps. A model trained on timesteps t is driven by samplers in terms of noise levels
sigma(t) = sqrt((1 - alpha_bar_t) / alpha_bar_t); ``DiscreteSchedule`` converts between the two with k-diffusion's
rule (piecewise-linear interpolation of log sigma over integer timesteps). Tables are float64 so that conversions
are exact to float32 precision whatever dtype the caller works in.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

Prediction = Literal["epsilon", "v_prediction"]

LDM_BETA_START = 0.00085
LDM_BETA_END = 0.012
LDM_TRAIN_STEPS = 1000


def scaled_linear_betas(
    num_steps: int = LDM_TRAIN_STEPS, beta_start: float = LDM_BETA_START, beta_end: float = LDM_BETA_END
) -> Tensor:
    """Betas linear in sqrt space, as LDM's ``make_beta_schedule("linear")`` (float64, [num_steps])."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2


def alphas_cumprod_from_betas(betas: Tensor) -> Tensor:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s): the fraction of signal variance left at timestep t."""
    return torch.cumprod(1.0 - betas.double(), dim=0)


def sigmas_from_alphas_cumprod(alphas_cumprod: Tensor) -> Tensor:
    """Noise level of each timestep in the variance-exploding view: x_t / sqrt(alpha_bar) = x_0 + sigma * noise."""
    alphas_cumprod = alphas_cumprod.double()
    return ((1.0 - alphas_cumprod) / alphas_cumprod) ** 0.5


class DiscreteSchedule:
    """Sigmas of a model trained on discrete timesteps 0..N-1, with sigma <-> t conversion.

    ``sigma_to_t`` interpolates linearly in log sigma between the two neighbouring timesteps (clamped to the table's
    range), and ``t_to_sigma`` is its inverse, matching k-diffusion's ``DiscreteSchedule``. ``prediction`` tells the
    denoiser wrapper whether the model predicts noise (SD1, SD2-base, SDXL) or v (SD2-768-v).
    """

    def __init__(self, alphas_cumprod: Tensor, prediction: Prediction = "epsilon") -> None:
        if prediction not in get_args(Prediction):
            raise ValueError(f"prediction must be one of {get_args(Prediction)}, got {prediction!r}")
        self.alphas_cumprod = alphas_cumprod.detach().to("cpu", torch.float64)
        self.sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod)
        self.log_sigmas = self.sigmas.log()
        self.prediction: Prediction = prediction
        self._log_sigmas_by_device: dict[torch.device, Tensor] = {}

    @classmethod
    def ldm_linear(cls, prediction: Prediction = "epsilon", num_steps: int = LDM_TRAIN_STEPS) -> DiscreteSchedule:
        """The schedule of SD1/SD2/SDXL checkpoints."""
        return cls(alphas_cumprod_from_betas(scaled_linear_betas(num_steps)), prediction)

    @property
    def num_timesteps(self) -> int:
        return self.sigmas.shape[0]

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def _log_sigmas_on(self, device: torch.device) -> Tensor:
        if device not in self._log_sigmas_by_device:
            # float64 is unsupported on MPS; float32 there still resolves timesteps to well under 1e-3.
            dtype = torch.float32 if device.type == "mps" else torch.float64
            self._log_sigmas_by_device[device] = self.log_sigmas.to(device, dtype)
        return self._log_sigmas_by_device[device]

    def sigma_to_t(self, sigma: Tensor, quantize: bool = False) -> Tensor:
        """Fractional timestep of each sigma (same shape; nearest integer timestep as int64 if ``quantize``)."""
        log_sigmas = self._log_sigmas_on(sigma.device)
        log_sigma = sigma.to(log_sigmas.dtype).log()
        if quantize:
            return (log_sigma.reshape(-1, 1) - log_sigmas).abs().argmin(dim=1).view(sigma.shape)
        # Index of the last table entry <= log_sigma, kept so that [low, low + 1] is a valid pair.
        low = torch.searchsorted(log_sigmas, log_sigma.reshape(-1).contiguous(), right=True) - 1
        low = low.clamp(0, log_sigmas.shape[0] - 2)
        low_value, high_value = log_sigmas[low], log_sigmas[low + 1]
        weight = ((log_sigma.reshape(-1) - low_value) / (high_value - low_value)).clamp(0, 1)
        t = low.to(weight.dtype) + weight
        return t.view(sigma.shape).to(sigma.dtype if sigma.is_floating_point() else torch.float32)

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """Sigma at (fractional) timesteps t in [0, N-1], interpolating log sigma linearly between integers."""
        log_sigmas = self._log_sigmas_on(t.device)
        t_wide = t.to(log_sigmas.dtype).clamp(0, log_sigmas.shape[0] - 1)
        low = t_wide.floor().long()
        high = t_wide.ceil().long()
        weight = t_wide - low
        sigma = ((1 - weight) * log_sigmas[low] + weight * log_sigmas[high]).exp()
        return sigma.to(t.dtype if t.is_floating_point() else torch.float32)
