"""Tests for modules/samplers/denoiser.py.

Reference: k-diffusion 0.1.1.post1's ``external.CompVisDenoiser`` / ``CompVisVDenoiser`` (what A1111 wraps SD models
in), given the same alphas_cumprod as float32 (as CompVis models hold them) and the same fake eps/v network. Our
schedule works in float64, so timesteps agree to float32 rounding of log sigma (atol 2e-3 of a timestep) and
denoised outputs to 1e-5. LCM's denoiser (A1111's ``sd_samplers_lcm``) is checked against its defining formulas.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modules.samplers.denoiser import DiscreteDenoiser, LCMDenoiser, LCMSchedule, append_dims, model_sigmas
from modules.sd.schedule import DiscreteSchedule
from tests.samplers.kdiffusion_oracle import load

_, EXTERNAL = load()


class FakeUNet(nn.Module):
    """eps (or v) from a random conv, the timestep and a conditioning tensor; ``apply_model`` as CompVis has it."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        with torch.no_grad():
            for p in self.conv.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
        self.alphas_cumprod = alphas_cumprod.float()
        self.seen_t: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        self.seen_t.append(t)
        scale = 1.0 if cond is None else 1.0 + cond.view(-1, 1, 1, 1)
        return torch.tanh(self.conv(x)) * scale + append_dims(t.float(), x.ndim) * 1e-4

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self(x, t, cond)


@pytest.fixture(scope="module")
def sigmas() -> torch.Tensor:
    return torch.tensor([14.6, 7.3, 3.2, 1.0, 0.43, 0.1, 0.0292])


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_denoiser_matches_kdiffusion_compvis(sigmas, prediction):
    schedule = DiscreteSchedule.ldm_linear(prediction)
    unet = FakeUNet(schedule.alphas_cumprod)
    reference_class = EXTERNAL.CompVisVDenoiser if prediction == "v_prediction" else EXTERNAL.CompVisDenoiser
    reference = reference_class(unet)
    ours = DiscreteDenoiser(unet, schedule)
    x = torch.randn(len(sigmas), 4, 8, 8, generator=torch.Generator().manual_seed(1)) * sigmas.view(-1, 1, 1, 1)
    cond = torch.linspace(0, 1, len(sigmas))
    expected = reference(x, sigmas, cond=cond)
    got = ours(x, sigmas, cond=cond)
    assert (got - expected).abs().max() < 1e-5
    torch.testing.assert_close(ours.sigma_to_t(sigmas), reference.sigma_to_t(sigmas), rtol=0, atol=2e-3)
    assert torch.equal(ours.sigma_to_t(sigmas, quantize=True), reference.sigma_to_t(sigmas, quantize=True))


def test_denoiser_formulas_eps_and_v():
    """eps: x0 = x - sigma * eps; v: x0 = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) * v; input x / sqrt(s^2+1)."""
    seen = {}

    def model_fn(x_in, t):
        seen["x_in"], seen["t"] = x_in, t
        return torch.full_like(x_in, 0.5)

    x = torch.full((1, 4, 2, 2), 3.0)
    sigma = torch.tensor([2.0])
    eps = DiscreteDenoiser(model_fn, DiscreteSchedule.ldm_linear("epsilon"))
    torch.testing.assert_close(eps(x, sigma), x - 2.0 * 0.5)
    torch.testing.assert_close(seen["x_in"], x / 5**0.5)
    v = DiscreteDenoiser(model_fn, DiscreteSchedule.ldm_linear("v_prediction"))
    torch.testing.assert_close(v(x, sigma), x / 5 - 2 / 5**0.5 * 0.5)


def test_get_sigmas_matches_kdiffusion():
    """rtol 5e-5: k-diffusion's table comes from float32 alphas_cumprod (see tests/sd/test_schedule.py)."""
    schedule = DiscreteSchedule.ldm_linear()
    reference = EXTERNAL.CompVisDenoiser(FakeUNet(schedule.alphas_cumprod))
    ours = DiscreteDenoiser(FakeUNet(schedule.alphas_cumprod), schedule)
    for n in (1, 2, 20, 37):
        got = ours.get_sigmas(n)
        assert got.dtype == torch.float32 and got.shape == (n + 1,) and got[-1] == 0
        torch.testing.assert_close(got, reference.get_sigmas(n), rtol=5e-5, atol=0)
    torch.testing.assert_close(model_sigmas(schedule), reference.get_sigmas(), rtol=5e-5, atol=0)


def test_lcm_schedule_uses_every_20th_timestep():
    schedule = DiscreteSchedule.ldm_linear()
    lcm = LCMSchedule(schedule)
    assert lcm.sigmas.shape == (50,)
    torch.testing.assert_close(lcm.sigmas, schedule.sigmas[19::20])
    t = lcm.sigma_to_t(lcm.sigmas.float())
    assert torch.equal(t, torch.arange(19, 1000, 20))
    assert lcm.sigma_to_t(torch.tensor([float(schedule.sigmas[500])])).item() == 499  # nearest of 499/519 in log
    torch.testing.assert_close(lcm.t_to_sigma(torch.tensor([19.0, 999.0, 29.0])).double(),
                               torch.stack([lcm.sigmas[0], lcm.sigmas[-1],
                                            (lcm.sigmas[0].log() / 2 + lcm.sigmas[1].log() / 2).exp()]),
                               rtol=1e-6, atol=0)  # fmt: skip
    sigmas = lcm.get_sigmas(4)
    assert sigmas.shape == (5,) and sigmas[-1] == 0
    expected = lcm.t_to_sigma(torch.linspace(999, 19, 4, dtype=torch.float64))
    torch.testing.assert_close(sigmas[:-1].double(), expected, rtol=1e-6, atol=0)


def test_lcm_denoiser_applies_the_boundary_condition():
    """x0 = c_skip(t) x + c_out(t) (x - sigma eps), t = 10 * LCM timestep, sigma_data 0.5 (A1111's LCM denoiser)."""
    schedule = DiscreteSchedule.ldm_linear()
    seen = {}

    def model_fn(x_in, t):
        seen["t"] = t
        return torch.full_like(x_in, 0.25)

    denoiser = LCMDenoiser(model_fn, schedule)
    sigma = denoiser.schedule.sigmas[10:11].float()  # LCM timestep 219
    x = torch.full((1, 4, 2, 2), 2.0)
    assert seen == {} and denoiser.get_sigmas(4).shape == (5,)
    got = denoiser(x, sigma)
    assert seen["t"].item() == 219
    scaled_t = 2190.0
    c_skip = 0.25 / (scaled_t**2 + 0.25)
    c_out = scaled_t / (scaled_t**2 + 0.25) ** 0.5
    expected = c_skip * x + c_out * (x - sigma * 0.25)
    torch.testing.assert_close(got, expected)
