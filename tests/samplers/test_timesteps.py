"""Tests for modules/samplers/timesteps.py and unipc.py against diffusers' schedulers (the reference).

A tiny random eps-network drives both sides on the same alphas_cumprod table (diffusers' float32 one):

* DDIM (eta 0 and eta 0.7 with identical per-step noise) vs ``DDIMScheduler`` and PLMS vs ``PNDMScheduler``
  (``skip_prk_steps=True``), both with ``timestep_spacing="leading"``, ``steps_offset=1`` — which reproduces A1111's
  ``range(0, 1000, 1000 // steps) + 1`` whenever ``steps`` divides 1000. A1111 stops at timestep 1 (it never takes
  diffusers' final step to ``t = -1``), so diffusers runs one step less.
* UniPC (bh1, order 3, lower_order_final) vs ``UniPCMultistepScheduler`` with ``timestep_spacing="linspace"`` and
  ``final_sigmas_type="sigma_min"``: A1111's time-uniform grid from t = 1 to 1/1000 lands on integer timesteps exactly
  when its step count (``len(timesteps)``) divides 999; A1111's "26 steps" give 27 timesteps, hence 27 UniPC steps
  (999, 962, ..., 37, then 0), which are comparable.

Tolerance: 1e-5 relative to the latent scale (max |difference| / max |reference|). Our side goes through a
k-diffusion denoiser (VP <-> VE conversion and sigma -> t interpolation in float32), diffusers stays in eps space.
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, PNDMScheduler, UniPCMultistepScheduler
from torch import Tensor, nn

from modules.samplers.timesteps import (
    TIMESTEP_SAMPLERS,
    denoise_vp,
    sample_ddim,
    sample_ddim_cfgpp,
    sample_plms,
    sample_unipc,
    timesteps_for_steps,
)
from modules.samplers.unipc import ContinuousVPSchedule
from modules.sd.schedule import DiscreteSchedule

LDM = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
TOLERANCE = 1e-5


class TinyEpsNet(nn.Module):
    """Two convolutions with a smooth timestep embedding: nonlinear in x and t, cheap on CPU."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv_in = nn.Conv2d(4, 8, 3, padding=1)
        self.conv_out = nn.Conv2d(8, 4, 3, padding=1)
        self.time = nn.Linear(3, 8)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        self.calls = 0

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        t = t.to(x.dtype).reshape(-1)
        emb = self.time(torch.stack([torch.sin(t / 150), torch.cos(t / 150), t / 1000], dim=-1))
        return self.conv_out(torch.tanh(self.conv_in(x) + emb[:, :, None, None]))


def k_denoiser(eps_net: nn.Module, alphas_cumprod: Tensor):
    """k-diffusion form of an eps model: D(x, sigma) = x - sigma * eps(x / sqrt(1 + sigma^2), t(sigma))."""
    schedule = DiscreteSchedule(alphas_cumprod)

    def denoise(x: Tensor, sigma: Tensor, **kwargs) -> Tensor:
        c_in = (1 / (sigma**2 + 1).sqrt())[:, None, None, None]
        return x - sigma[:, None, None, None] * eps_net(x * c_in, schedule.sigma_to_t(sigma), **kwargs)

    return denoise


def assert_close(actual: Tensor, expected: Tensor, tolerance: float = TOLERANCE) -> None:
    error = (actual - expected).abs().max().item() / expected.abs().max().item()
    assert error < tolerance, f"relative error {error:.2e} >= {tolerance:.0e}"


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = TinyEpsNet().eval()
    alphas_cumprod = DDIMScheduler(**LDM).alphas_cumprod.double()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    return net, alphas_cumprod, k_denoiser(net, alphas_cumprod), x


def test_timesteps_follow_a1111_rule():
    assert timesteps_for_steps(20).tolist() == list(range(1, 1000, 50))
    thirty = timesteps_for_steps(30)  # 1000 // 30 = 33: 31 timesteps, the last one 991
    assert len(thirty) == 31 and thirty[-1] == 991
    assert timesteps_for_steps(1000)[-2:].tolist() == [999, 999]  # 1000 is clipped to 999
    assert timesteps_for_steps(20, discard_next_to_last_sigma=True).tolist() == timesteps_for_steps(21).tolist()
    with pytest.raises(ValueError):
        timesteps_for_steps(0)


@pytest.mark.parametrize("steps", [10, 20, 25, 50])
def test_leading_spacing_with_offset_matches_a1111_when_steps_divide_1000(steps: int):
    scheduler = DDIMScheduler(**LDM, timestep_spacing="leading", steps_offset=1)
    scheduler.set_timesteps(steps)
    assert scheduler.timesteps.flip(0).tolist() == timesteps_for_steps(steps).tolist()


def test_denoise_vp_round_trips_eps(setup):
    net, alphas_cumprod, model, x = setup
    alpha_bar = float(alphas_cumprod[501])
    x0, eps = denoise_vp(model, x, alpha_bar, {})
    with torch.no_grad():
        expected_eps = net(x, torch.full((2,), 501.0))
    assert_close(eps, expected_eps)
    assert_close(x0, (x - math.sqrt(1 - alpha_bar) * expected_eps) / math.sqrt(alpha_bar))


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_matches_diffusers(setup, eta: float):
    net, alphas_cumprod, model, x = setup
    steps = 10
    noises = [torch.randn(x.shape, generator=torch.Generator().manual_seed(10 + i)) for i in range(steps)]
    scheduler = DDIMScheduler(**LDM, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    scheduler.set_timesteps(steps)
    expected = x.clone()
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps[:-1]):  # A1111 stops at timestep 1
            eps = net(expected, t.expand(2).float())
            expected = scheduler.step(eps, t, expected, eta=eta, variance_noise=noises[i]).prev_sample

    drawn = iter(noises)
    actual = sample_ddim(
        model,
        x,
        timesteps_for_steps(steps),
        eta=eta,
        alphas_cumprod=alphas_cumprod,
        noise_sampler=lambda sigma, sigma_next: next(drawn),
        disable=True,
    )
    assert_close(actual, expected)


def test_ddim_with_eta_needs_a_noise_sampler(setup):
    _, alphas_cumprod, model, x = setup
    with pytest.raises(ValueError, match="noise_sampler"):
        sample_ddim(model, x, timesteps_for_steps(5), eta=1.0, alphas_cumprod=alphas_cumprod, disable=True)


def test_plms_matches_diffusers_pndm(setup):
    net, alphas_cumprod, model, x = setup
    steps = 10
    scheduler = PNDMScheduler(**LDM, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    scheduler.set_timesteps(steps)
    expected = x.clone()
    with torch.no_grad():
        for t in scheduler.timesteps[:-1]:  # plms_timesteps: 901, 801, 801, ..., 101, 1 (A1111 skips the last)
            expected = scheduler.step(net(expected, t.expand(2).float()), t, expected).prev_sample
    actual = sample_plms(model, x, timesteps_for_steps(steps), alphas_cumprod=alphas_cumprod, disable=True)
    assert_close(actual, expected)


def test_unipc_matches_diffusers_on_integer_grid(setup):
    net, alphas_cumprod, model, x = setup
    steps = 27  # 999 / 27 = 37: A1111's continuous grid hits integer timesteps
    assert len(timesteps_for_steps(26)) == steps  # A1111 runs UniPC over len(timesteps): "26 steps" are 27
    scheduler = UniPCMultistepScheduler(
        **LDM,
        solver_order=3,
        solver_type="bh1",
        predict_x0=True,
        lower_order_final=True,
        timestep_spacing="linspace",
        final_sigmas_type="sigma_min",
    )
    scheduler.set_timesteps(steps)
    assert scheduler.timesteps.tolist() == list(range(999, 0, -37))
    expected = x.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            expected = scheduler.step(net(expected, t.expand(2).float()), t, expected).prev_sample
    net.calls = 0
    actual = sample_unipc(model, x, timesteps_for_steps(26), alphas_cumprod=alphas_cumprod, disable=True)
    assert net.calls == steps
    assert_close(actual, expected)


def test_a1111_step_counts(setup):
    """20 "steps" of DDIM are 19 UNet calls (A1111 stops at timestep 1); PLMS adds one call; UniPC uses all 20."""
    net, alphas_cumprod, model, x = setup
    counts = {}
    for name, function, *_ in TIMESTEP_SAMPLERS:
        net.calls = 0
        function(model, x, timesteps_for_steps(20), alphas_cumprod=alphas_cumprod, disable=True)
        counts[name] = net.calls
    assert counts == {"DDIM": 19, "DDIM CFG++": 19, "PLMS": 20, "UniPC": 20}


def test_callbacks_report_each_step(setup):
    _, alphas_cumprod, model, x = setup
    for function in (sample_ddim, sample_plms, sample_unipc):
        seen = []
        function(
            model, x, timesteps_for_steps(10), callback=seen.append, alphas_cumprod=alphas_cumprod, disable=True
        )
        assert [d["i"] for d in seen] == list(range(len(seen))) and len(seen) >= 9
        assert all(d["denoised"].shape == x.shape for d in seen)


class FakeGuidedModel:
    """Returns fixed cond/uncond x0 per call, exposing the CFG++ protocol of CFGDenoiser."""

    def __init__(self, cond_x0: Tensor, uncond_x0: Tensor) -> None:
        self.cond_x0, self.uncond_x0 = cond_x0, uncond_x0
        self.cond_scale_multiplier = 1.0
        self.keep_uncond_denoised = False
        self.last_uncond_denoised = None
        self.seen_multipliers = []

    def __call__(self, x: Tensor, sigma: Tensor, cond_scale: float) -> Tensor:
        self.seen_multipliers.append(self.cond_scale_multiplier)
        if self.keep_uncond_denoised:
            self.last_uncond_denoised = self.uncond_x0
        return self.uncond_x0 + cond_scale * self.cond_scale_multiplier * (self.cond_x0 - self.uncond_x0)


def test_ddim_cfgpp_renoises_with_the_uncond_prediction(setup):
    _, alphas_cumprod, _, x = setup
    cond_x0, uncond_x0 = torch.full_like(x, 0.5), torch.full_like(x, -0.25)
    model = FakeGuidedModel(cond_x0, uncond_x0)
    timesteps = torch.tensor([1, 501])  # one step: 501 -> 1
    out = sample_ddim_cfgpp(
        model, x, timesteps, extra_args={"cond_scale": 6.25}, alphas_cumprod=alphas_cumprod, disable=True
    )
    ab, ab_prev = float(alphas_cumprod[501]), float(alphas_cumprod[1])
    guided = uncond_x0 + 0.5 * (cond_x0 - uncond_x0)  # 6.25 / 12.5
    eps_uncond = (x - math.sqrt(ab) * uncond_x0) / math.sqrt(1 - ab)
    assert_close(out, math.sqrt(ab_prev) * guided + math.sqrt(1 - ab_prev) * eps_uncond)
    assert model.seen_multipliers == [1 / 12.5]
    assert model.cond_scale_multiplier == 1.0 and model.keep_uncond_denoised is False  # restored


def test_unipc_img2img_starts_one_step_after_last_timestep(setup):
    _, alphas_cumprod, _, x = setup
    seen_sigmas = []

    def model(x_ve: Tensor, sigma: Tensor) -> Tensor:
        seen_sigmas.append(float(sigma[0]))
        return torch.zeros_like(x_ve)

    timesteps = timesteps_for_steps(20)[:15]  # denoise 0.75 of 20 steps: t_enc = 15, last timestep 701
    sample_unipc(model, x, timesteps, alphas_cumprod=alphas_cumprod, is_img2img=True, disable=True)
    assert len(seen_sigmas) == 15
    expected = math.sqrt((1 - float(alphas_cumprod[701])) / float(alphas_cumprod[701]))
    assert seen_sigmas[0] == pytest.approx(expected, rel=1e-6)


def test_continuous_schedule_interpolates_log_alpha():
    alphas_cumprod = DDIMScheduler(**LDM).alphas_cumprod.double()
    ns = ContinuousVPSchedule(alphas_cumprod)
    assert ns.alpha(0.5) == pytest.approx(math.sqrt(float(alphas_cumprod[499])), rel=1e-12)  # t = (n + 1) / N
    midway = 0.5 * (math.log(alphas_cumprod[499]) + math.log(alphas_cumprod[500])) / 2
    assert math.log(ns.alpha(0.5005)) == pytest.approx(midway, rel=1e-12)
    assert ns.t_of_lambda(ns.lambda_(0.3217)) == pytest.approx(0.3217, rel=1e-9)
    grid = ns.time_grid("logSNR", 1.0, 0.001, 4)
    assert grid[0] == pytest.approx(1.0) and grid[-1] == pytest.approx(0.001)
    lambdas = [ns.lambda_(t) for t in grid]
    assert max(abs((b - a) - (lambdas[1] - lambdas[0])) for a, b in zip(lambdas, lambdas[1:], strict=False)) < 1e-9
