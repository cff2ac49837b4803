"""Tests for modules/samplers/kdiffusion.py, kdiffusion_sde.py and noise.py.

Reference equivalence: k-diffusion 0.1.1.post1's ``sampling`` module (the version A1111 pins), imported through
``tests/samplers/kdiffusion_oracle.py``. Same tiny random conv denoiser, same float32 sigmas, same noise (each side
gets its own, identically seeded noise source) -> final latents agree to 1e-5 max abs. LCM and Restart are not in
that k-diffusion version: LCM is checked against its defining recurrence, Restart against Heun (what it is below
20 steps) and, like every sampler, analytically.

Analytic: 1-D Gaussian-mixture data has a closed-form denoiser E[x0 | x_sigma]; 30 Karras steps from sigma 14.6 to
0.03 must carry N(0, 14.6^2) to the data's mean and variance. Deterministic samplers start from 4000 evenly spaced
normal quantiles (the 1-D flow is monotone, so there is almost no sampling error): mean within 0.02, variance within
3% (starting from N(0, 14.6^2) instead of the true N(0, 14.6^2 + var) alone costs 0.5%). Stochastic samplers start
from 4000 random draws: mean within 0.1 (6 standard errors), variance within 10%.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from modules.samplers import kdiffusion as kd
from modules.samplers import kdiffusion_sde as kds
from modules.samplers import registry
from modules.samplers.noise import BrownianTreeNoiseSampler, ImageNoise, noise_sampler_from
from modules.samplers.schedulers import karras
from tests.samplers.kdiffusion_oracle import load

K, _ = load()
# torchsde warns when a query lands a rounding error outside the tree's interval (sigma -> -log -> exp round trips);
# k-diffusion and A1111 do the same queries.
pytestmark = pytest.mark.filterwarnings("ignore:Should have t:UserWarning")
SHAPE = (2, 4, 8, 8)
TOL = 1e-5


class TinyDenoiser(nn.Module):
    """A small random conv net taking (x, sigma) and returning an x0 estimate; acts on each batch row alone."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
        self.calls = 0

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        s = sigma.view(-1, 1, 1, 1).to(x.dtype)
        c_in = 1 / (s**2 + 1) ** 0.5
        hidden = torch.nn.functional.silu(self.conv1(x * c_in) + 0.1 * s.log())
        return x / (s**2 + 1) + s * c_in * torch.tanh(self.conv2(hidden))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are tiny: extra threads only spin against the other processes on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> TinyDenoiser:
    return TinyDenoiser()


@pytest.fixture(scope="module")
def sigmas() -> torch.Tensor:
    return karras(12, 0.0292, 14.6146)


@pytest.fixture(scope="module")
def x_start(sigmas) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(1)) * sigmas[0]


def seeded_noise(seed: int, shape=SHAPE):
    generator = torch.Generator().manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(shape, generator=generator)


def brownian(x, sigmas, seeds=(11, 12)):
    return K.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=list(seeds))


def assert_close(ours: torch.Tensor, reference: torch.Tensor, tol: float = TOL) -> None:
    assert ours.shape == reference.shape
    assert torch.isfinite(ours).all()
    diff = (ours - reference).abs().max().item()
    assert diff <= tol, f"max abs difference {diff:.3g} > {tol}"


ODE_CASES = [
    ("euler", kd.sample_euler, {}),
    ("heun", kd.sample_heun, {}),
    ("dpm_2", kd.sample_dpm_2, {}),
    ("lms", kd.sample_lms, {}),
    ("dpmpp_2m", kd.sample_dpmpp_2m, {}),
]


@pytest.mark.parametrize(("name", "ours", "knobs"), ODE_CASES, ids=[c[0] for c in ODE_CASES])
def test_deterministic_samplers_match_kdiffusion(model, sigmas, x_start, name, ours, knobs):
    """Reference: k_diffusion.sampling.sample_<name>; tolerance 1e-5 max abs."""
    reference = getattr(K, f"sample_{name}")(model, x_start, sigmas, disable=True, **knobs)
    assert_close(ours(model, x_start, sigmas, disable=True, **knobs), reference)


@pytest.mark.parametrize("name", ["euler", "heun", "dpm_2"])
def test_churn_matches_kdiffusion(model, sigmas, x_start, name):
    """Reference: k-diffusion with s_churn (noise from torch.randn_like): both runs start from one global seed."""
    knobs = {"s_churn": 1.0, "s_tmin": 0.05, "s_tmax": 10.0, "s_noise": 1.003}
    torch.manual_seed(5)
    reference = getattr(K, f"sample_{name}")(model, x_start, sigmas, disable=True, **knobs)
    torch.manual_seed(5)
    ours = getattr(kd, f"sample_{name}")(
        model, x_start, sigmas, disable=True, noise_sampler=lambda s, sn: torch.randn_like(x_start), **knobs
    )
    assert_close(ours, reference)


ANCESTRAL_CASES = [
    ("euler_ancestral", kd.sample_euler_ancestral, {"eta": 1.0}),
    ("euler_ancestral", kd.sample_euler_ancestral, {"eta": 0.5, "s_noise": 0.9}),
    ("dpm_2_ancestral", kd.sample_dpm_2_ancestral, {"eta": 1.0}),
    ("dpmpp_2s_ancestral", kd.sample_dpmpp_2s_ancestral, {"eta": 1.0}),
    ("dpmpp_2s_ancestral", kd.sample_dpmpp_2s_ancestral, {"eta": 0.0}),
]


@pytest.mark.parametrize(("name", "ours", "knobs"), ANCESTRAL_CASES, ids=[f"{c[0]}-{c[2]}" for c in ANCESTRAL_CASES])
def test_ancestral_samplers_match_kdiffusion(model, sigmas, x_start, name, ours, knobs):
    """Reference: k-diffusion with an identically seeded noise_sampler; tolerance 1e-5 max abs."""
    reference = getattr(K, f"sample_{name}")(
        model, x_start, sigmas, disable=True, noise_sampler=seeded_noise(3), **knobs
    )
    assert_close(ours(model, x_start, sigmas, disable=True, noise_sampler=seeded_noise(3), **knobs), reference)


SDE_CASES = [
    ("dpmpp_sde", kds.sample_dpmpp_sde, {}),
    ("dpmpp_sde", kds.sample_dpmpp_sde, {"eta": 0.7, "r": 0.4}),
    ("dpmpp_2m_sde", kds.sample_dpmpp_2m_sde, {"solver_type": "midpoint"}),
    ("dpmpp_2m_sde", kds.sample_dpmpp_2m_sde, {"solver_type": "heun"}),
    ("dpmpp_2m_sde", kds.sample_dpmpp_2m_sde, {"solver_type": "heun", "eta": 0.0}),
    ("dpmpp_3m_sde", kds.sample_dpmpp_3m_sde, {}),
    ("dpmpp_3m_sde", kds.sample_dpmpp_3m_sde, {"eta": 0.5, "s_noise": 1.1}),
]


@pytest.mark.parametrize(("name", "ours", "knobs"), SDE_CASES, ids=[f"{c[0]}-{c[2]}" for c in SDE_CASES])
def test_sde_samplers_match_kdiffusion(model, sigmas, x_start, name, ours, knobs):
    """Reference: k-diffusion, each side with its own k-diffusion BrownianTreeNoiseSampler (same seeds); 1e-5."""
    reference = getattr(K, f"sample_{name}")(
        model, x_start, sigmas, disable=True, noise_sampler=brownian(x_start, sigmas), **knobs
    )
    got = ours(model, x_start, sigmas, disable=True, noise_sampler=brownian(x_start, sigmas), **knobs)
    assert_close(got, reference)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dpm_fast_matches_kdiffusion(model, sigmas, x_start, eta):
    """Reference: k-diffusion's sample_dpm_fast(sigma_min, sigma_max, n) with the range and length of our sigmas."""
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # k-diffusion calls torch.tensor() on a tensor
        reference = K.sample_dpm_fast(
            model, x_start, sigma_min, sigma_max, len(sigmas) - 1, disable=True, eta=eta, noise_sampler=seeded_noise(4)
        )
    ours = kds.sample_dpm_fast(model, x_start, sigmas, disable=True, eta=eta, noise_sampler=seeded_noise(4))
    assert_close(ours, reference)


@pytest.mark.parametrize(("order", "eta"), [(3, 0.0), (2, 0.0), (3, 1.0)])
def test_dpm_adaptive_matches_kdiffusion(model, sigmas, x_start, order, eta):
    """Reference: k-diffusion's sample_dpm_adaptive over our sigmas' range; 1e-5 max abs."""
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reference = K.sample_dpm_adaptive(
            model, x_start, sigma_min, sigma_max, disable=True, order=order, eta=eta, noise_sampler=seeded_noise(6)
        )
    ours = kds.sample_dpm_adaptive(
        model, x_start, sigmas, disable=True, order=order, eta=eta, noise_sampler=seeded_noise(6)
    )
    assert_close(ours, reference)


def test_lcm_follows_its_recurrence(model, sigmas, x_start):
    """Reference: the LCM recurrence x <- D(x, sigma_i) + sigma_{i+1} * noise (A1111's sample_lcm), by hand."""
    noise = seeded_noise(8)
    x = x_start
    for i in range(len(sigmas) - 1):
        x = model(x, sigmas[i] * x.new_ones([x.shape[0]]))
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise(sigmas[i], sigmas[i + 1])
    assert_close(kd.sample_lcm(model, x_start, sigmas, disable=True, noise_sampler=seeded_noise(8)), x)


def test_restart_below_20_steps_is_heun(model, sigmas, x_start):
    """Reference: k-diffusion's sample_heun; A1111's Restart adds no restarts under 20 steps."""
    reference = K.sample_heun(model, x_start, sigmas, disable=True)
    assert_close(kd.sample_restart(model, x_start, sigmas, disable=True, noise_sampler=seeded_noise(9)), reference)


def test_restart_plan_follows_a1111_rules():
    """30 steps: 21 main Karras steps plus 9 restart steps once (Heun: two model calls each, Euler on the last)."""
    sigmas = karras(30, 0.0292, 14.6146)
    plan = kd._restart_plan(sigmas, None)
    assert len(plan) == 30
    ups = [k for k in range(1, len(plan)) if plan[k][0] > plan[k - 1][1]]
    assert len(ups) == 1  # one jump back up in noise
    jump_from, jump_to = plan[ups[0] - 1][1], plan[ups[0]][0]
    assert abs(float(jump_from) - 0.1) < 0.05 and abs(float(jump_to) - 2.0) < 0.5
    assert len(kd._restart_plan(karras(40, 0.0292, 14.6146), None)) == 40  # 40 - 2*10 main + 2 restarts of 10


def test_callback_reports_every_step(model, sigmas, x_start):
    seen = []
    kd.sample_euler_ancestral(model, x_start, sigmas, callback=seen.append, disable=True, noise_sampler=seeded_noise(1))
    assert [d["i"] for d in seen] == list(range(len(sigmas) - 1))
    assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
    assert float(seen[3]["sigma"]) == float(sigmas[3])


def test_linear_multistep_coefficients_integrate_exactly():
    """The weights integrate polynomials of degree < order exactly: weights sum to the interval length."""
    import numpy as np

    t = np.array([14.6, 9.1, 5.5, 3.2, 1.7, 0.9])
    for order in (1, 2, 3, 4):
        coeffs = [kd.linear_multistep_coeff(order, t, 4, j) for j in range(order)]
        assert math.isclose(sum(coeffs), t[5] - t[4], rel_tol=1e-12)


# --- per-image noise -----------------------------------------------------------------------------------------------


def test_image_noise_rows_come_from_their_own_seed():
    noise = ImageNoise([7, 8, 9], (4, 8, 8))
    first = noise.next()
    for row, seed in enumerate([7, 8, 9]):
        expected = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(first[row], expected, rtol=0, atol=0)
    noise.reseed([107, 108, 109])  # ENSD: later draws come from seed + delta
    expected = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(108))
    torch.testing.assert_close(noise(None, None)[1], expected, rtol=0, atol=0)
    with pytest.raises(ValueError):
        noise.reseed([1, 2])
    with pytest.raises(ValueError):
        noise.randn_like(torch.zeros(2, 4, 8, 8))


def test_noise_sampler_from_adapts_a_source():
    draws = iter([torch.ones(1), torch.zeros(1)])
    sampler = noise_sampler_from(lambda: next(draws))
    assert sampler(torch.tensor(1.0), torch.tensor(0.5)).item() == 1.0


def test_brownian_noise_matches_kdiffusion(sigmas):
    """Reference: k-diffusion's BrownianTreeNoiseSampler, per-row seeds and a single seed; exact."""
    x = torch.zeros(3, 4, 8, 8)
    for seeds in ([5, 6, 7], 42):
        ours = BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seeds=seeds)
        reference = K.BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seed=seeds)
        for i in (0, 3, 7):
            torch.testing.assert_close(ours(sigmas[i], sigmas[i + 1]), reference(sigmas[i], sigmas[i + 1]))


def test_brownian_row_equals_single_image_tree(sigmas):
    """Row i of a per-image Brownian sampler is the single-image sampler for seeds[i]."""
    batch = BrownianTreeNoiseSampler(torch.zeros(3, 4, 8, 8), sigmas[-2], sigmas[0], seeds=[5, 6, 7])
    alone = BrownianTreeNoiseSampler(torch.zeros(1, 4, 8, 8), sigmas[-2], sigmas[0], seeds=[6])
    torch.testing.assert_close(batch(sigmas[2], sigmas[3])[1], alone(sigmas[2], sigmas[3])[0])


BATCH_CASES = ["Euler a", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE",
               "DPM fast", "Restart", "LCM"]  # fmt: skip


@pytest.mark.parametrize("name", BATCH_CASES)
def test_image_does_not_depend_on_batch(model, name):
    """Seed S alone and as row 2 of a batch of 3 give the same image (per-image noise and Brownian trees)."""
    sampler = registry.find_sampler(name)
    sigmas = karras(21, 0.0292, 14.6146)

    def run(seeds):
        image_noise = ImageNoise(seeds, SHAPE[1:])
        x = image_noise.next() * sigmas[0]
        image_noise.reseed([s + 31337 for s in seeds])  # ENSD
        noise = registry.make_noise_sampler(sampler, x, sigmas, seeds, image_noise)
        knobs = registry.sampler_knobs(sampler, eta=1.0)
        return sampler.function(model, x, sigmas, disable=True, noise_sampler=noise, **knobs)

    alone = run([1234])
    batch = run([99, 1234, 5])
    assert_close(batch[1:2], alone, 1e-5)
    assert (batch[0] - alone[0]).abs().max() > 0.1


# --- analytic: Gaussian mixture ------------------------------------------------------------------------------------

WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)
MEANS = torch.tensor([-1.4, 0.6], dtype=torch.float64)
STDS = torch.tensor([0.3, 0.5], dtype=torch.float64)
TARGET_MEAN = float((WEIGHTS * MEANS).sum())
TARGET_VAR = float((WEIGHTS * (STDS**2 + MEANS**2)).sum()) - TARGET_MEAN**2
N_SAMPLES = 4000


def mixture_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x0 + sigma * n = x] for the mixture: responsibilities times each component's posterior mean."""
    var = STDS**2 + sigma.view(-1, 1) ** 2
    log_p = WEIGHTS.log() - 0.5 * (2 * math.pi * var).log() - 0.5 * (x - MEANS) ** 2 / var
    responsibility = torch.softmax(log_p, dim=1)
    posterior_mean = MEANS + STDS**2 / var * (x - MEANS)
    return (responsibility * posterior_mean).sum(dim=1, keepdim=True)


def expected_fraction_below(threshold: float) -> float:
    z = (threshold - MEANS) / STDS
    return float((WEIGHTS * 0.5 * (1 + torch.erf(z / 2**0.5))).sum())


def initial_noise(deterministic: bool, sigma_max: float, generator: torch.Generator) -> torch.Tensor:
    """N(0, sigma_max^2): evenly spaced quantiles for deterministic samplers, random draws otherwise."""
    if deterministic:
        quantiles = (torch.arange(N_SAMPLES, dtype=torch.float64) + 0.5) / N_SAMPLES
        return (2**0.5 * torch.erfinv(2 * quantiles - 1)).view(-1, 1) * sigma_max
    return torch.randn((N_SAMPLES, 1), generator=generator, dtype=torch.float64) * sigma_max


def assert_matches_mixture(out: torch.Tensor, mean_tol: float, var_rtol: float, fraction_tol: float) -> None:
    mean, var = out.mean().item(), out.var().item()
    assert abs(mean - TARGET_MEAN) < mean_tol, (mean, TARGET_MEAN)
    assert abs(var / TARGET_VAR - 1) < var_rtol, (var, TARGET_VAR)
    low_mode = (out < -0.4).double().mean().item()  # mostly the 30% component at -1.4
    assert abs(low_mode - expected_fraction_below(-0.4)) < fraction_tol, low_mode


DETERMINISTIC = ["DPM++ 2M", "Euler", "LMS", "Heun", "DPM2", "DPM adaptive"]
STOCHASTIC = ["DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a", "DPM2 a",
              "DPM fast", "Restart"]  # fmt: skip
FIRST_ORDER = {"Euler", "Euler a"}  # 60 steps: at 30 their O(h) error alone is 7-11% of the variance


@pytest.mark.parametrize("name", DETERMINISTIC + STOCHASTIC)
def test_sampler_reaches_gaussian_mixture(name):
    """Deterministic: mean +-0.02, variance +-3% (first order: +-5%). Stochastic: +-0.1, +-10%."""
    sampler = registry.find_sampler(name)
    sigmas = karras(60 if name in FIRST_ORDER else 30, 0.03, 14.6).double()
    deterministic = name in DETERMINISTIC
    generator = torch.Generator().manual_seed(2024)
    x = initial_noise(deterministic, float(sigmas[0]), generator)

    def noise(sigma, sigma_next):
        return torch.randn((N_SAMPLES, 1), generator=generator, dtype=torch.float64)

    if sampler.options.get("brownian_noise"):
        noise = BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seeds=77)
    knobs = registry.sampler_knobs(sampler, eta=0.0 if deterministic else 1.0, noise_sampler=noise)
    out = sampler.function(mixture_denoiser, x, sigmas, disable=True, **knobs)
    if deterministic:
        assert_matches_mixture(out, 0.02, 0.05 if name in FIRST_ORDER else 0.03, 0.005)
    else:
        assert_matches_mixture(out, 0.1, 0.10, 0.03)


def test_lcm_with_a_consistency_function_reaches_gaussian_mixture():
    """LCM assumes a consistency model f(x, sigma) = the ODE's endpoint, not E[x0 | x] (with the posterior mean,
    re-noising loses variance at every step). With f computed by 40 DPM++ 2M steps, 4 LCM steps are exact in
    distribution: mean +-0.1, variance +-10%."""

    def consistency(x, sigma):
        return kd.sample_dpmpp_2m(mixture_denoiser, x, karras(40, 1e-3, float(sigma[0])).double(), disable=True)

    sigmas = karras(4, 0.13, 14.6).double()
    generator = torch.Generator().manual_seed(7)
    x = initial_noise(True, float(sigmas[0]), generator)
    out = kd.sample_lcm(
        consistency,
        x,
        sigmas,
        disable=True,
        noise_sampler=lambda s, sn: torch.randn((N_SAMPLES, 1), generator=generator, dtype=torch.float64),
    )
    assert_matches_mixture(out, 0.1, 0.10, 0.03)
