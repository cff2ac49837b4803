"""Tests for modules/samplers/schedulers.py.

References: k-diffusion 0.1.1.post1's get_sigmas_karras/exponential/polyexponential (rtol 1e-6) and
``external.DiscreteSchedule.get_sigmas`` ("Uniform"); scipy's ``stats.beta.ppf`` for our Beta quantiles (rel 1e-9:
near q = 1 the quantile is ill-conditioned);
the Align Your Steps tables as NVIDIA publishes them; A1111's ``sd_schedulers`` rules restated by hand for the
schedulers that read the model's table.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.samplers import schedulers as S
from modules.sd.schedule import DiscreteSchedule
from tests.samplers.kdiffusion_oracle import load

K, EXTERNAL = load()
SIGMA_MIN, SIGMA_MAX = 0.0291675, 14.614642

PUBLISHED_AYS_SD15 = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
PUBLISHED_AYS_SDXL = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]


@pytest.fixture(scope="module")
def schedule() -> DiscreteSchedule:
    return DiscreteSchedule.ldm_linear()


@pytest.mark.parametrize("n", [1, 2, 10, 30, 150])
def test_karras_exponential_polyexponential_match_kdiffusion(n):
    for rho in (7.0, 3.0):
        torch.testing.assert_close(
            S.karras(n, SIGMA_MIN, SIGMA_MAX, rho), K.get_sigmas_karras(n, SIGMA_MIN, SIGMA_MAX, rho), rtol=1e-6, atol=0
        )
    torch.testing.assert_close(
        S.exponential(n, SIGMA_MIN, SIGMA_MAX), K.get_sigmas_exponential(n, SIGMA_MIN, SIGMA_MAX), rtol=1e-6, atol=0
    )
    for rho in (1.0, 2.5):
        torch.testing.assert_close(
            S.polyexponential(n, SIGMA_MIN, SIGMA_MAX, rho),
            K.get_sigmas_polyexponential(n, SIGMA_MIN, SIGMA_MAX, rho),
            rtol=1e-6,
            atol=0,
        )


def test_uniform_matches_kdiffusion_discrete_schedule(schedule):
    """rtol 5e-5: k-diffusion's table is float32 (see tests/sd/test_schedule.py)."""
    reference = EXTERNAL.DiscreteSchedule(schedule.sigmas.float(), quantize=False)
    for n in (2, 20, 33):
        torch.testing.assert_close(S.uniform(n, 0, 0, schedule), reference.get_sigmas(n), rtol=5e-5, atol=0)


def test_align_your_steps_tables_are_the_published_ones():
    assert list(S.AYS_SD15) == PUBLISHED_AYS_SD15
    assert list(S.AYS_SDXL) == PUBLISHED_AYS_SDXL
    for table, is_sdxl in ((PUBLISHED_AYS_SD15, False), (PUBLISHED_AYS_SDXL, True)):
        exact = S.align_your_steps(11, SIGMA_MIN, SIGMA_MAX, is_sdxl=is_sdxl)
        torch.testing.assert_close(exact, torch.tensor([*table, 0.0]))
        # 21 points: log-linear interpolation keeps the table at every other point and puts geometric means between.
        fine = S.align_your_steps(21, SIGMA_MIN, SIGMA_MAX, is_sdxl=is_sdxl)
        torch.testing.assert_close(fine[:-1:2], torch.tensor(table))
        geometric_means = np.sqrt(np.array(table[:-1]) * np.array(table[1:]))
        torch.testing.assert_close(fine[1:-1:2], torch.tensor(geometric_means, dtype=torch.float32))
        # Other step counts (A1111: any n other than 11) are resampled from the table: same ends, in between.
        ten = S.align_your_steps(10, SIGMA_MIN, SIGMA_MAX, is_sdxl=is_sdxl)
        assert ten.shape == (11,) and ten[0] == pytest.approx(14.615) and ten[-2] == pytest.approx(0.029)


def test_beta_quantiles_match_scipy():
    from scipy import stats

    for a, b in ((0.6, 0.6), (0.5, 0.7), (2.0, 3.5)):
        for q in (0.0, 1e-12, 1e-4, 0.05, 0.3, 0.5, 0.71, 0.99, 1 - 1e-9, 1.0):
            assert S.beta_ppf(q, a, b) == pytest.approx(stats.beta.ppf(q, a, b), rel=1e-9, abs=1e-15)


def test_beta_schedule_maps_quantiles_onto_the_range():
    from scipy import stats

    got = S.beta(8, SIGMA_MIN, SIGMA_MAX)
    quantiles = stats.beta.ppf(1 - np.linspace(0, 1, 8), 0.6, 0.6)
    expected = torch.tensor([*(SIGMA_MIN + quantiles * (SIGMA_MAX - SIGMA_MIN)), 0.0], dtype=torch.float32)
    torch.testing.assert_close(got, expected)


def test_schedulers_reading_the_model_table(schedule):
    """A1111's rules: timesteps from sigma_to_t(sigma_max)=999 to sigma_to_t(sigma_min)=0."""
    table = schedule.sigmas
    lo, hi = float(table[0]), float(table[-1])
    n = 10
    normal = S.normal(n, lo, hi, schedule)
    torch.testing.assert_close(normal[:-1], schedule.t_to_sigma(torch.linspace(999, 0, n).double()).float())
    sgm = S.sgm_uniform(n, lo, hi, schedule)
    torch.testing.assert_close(sgm[:-1], schedule.t_to_sigma(torch.linspace(999, 0, n + 1).double()[:-1]).float())
    simple = S.simple(n, lo, hi, schedule)
    torch.testing.assert_close(simple[:-1], table[[999 - 100 * i for i in range(n)]].float())
    ddim = S.ddim(n, lo, hi, schedule)
    torch.testing.assert_close(ddim[:-1], table[list(range(901, 0, -100))].float())


def test_a1111_quirks_are_kept(schedule):
    """KL Optimal ends at sigma_min (no trailing 0); DDIM gives ceil(999 / (1000 // n)) steps."""
    kl = S.kl_optimal(10, SIGMA_MIN, SIGMA_MAX)
    assert kl.shape == (11,)
    assert kl[0] == pytest.approx(SIGMA_MAX) and kl[-1] == pytest.approx(SIGMA_MIN)
    torch.testing.assert_close(kl.atan(), torch.linspace(np.arctan(SIGMA_MAX), np.arctan(SIGMA_MIN), 11))
    assert len(S.ddim(30, 0, 0, schedule)) == 32
    assert len(S.ddim(20, 0, 0, schedule)) == 21


REGULAR = ["uniform", "karras", "exponential", "polyexponential", "sgm_uniform", "align_your_steps", "simple",
           "normal", "beta"]  # fmt: skip


@pytest.mark.parametrize("name", REGULAR)
@pytest.mark.parametrize("n", [2, 7, 30])
def test_schedulers_descend_to_zero_in_n_steps(schedule, name, n):
    sigmas = S.compute_sigmas(name, n, schedule)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (n + 1,)
    assert sigmas[-1] == 0
    assert (sigmas[1:] < sigmas[:-1]).all()
    assert float(sigmas[0]) == pytest.approx(14.61, abs=0.01)


def test_compute_sigmas_overrides(schedule):
    torch.testing.assert_close(
        S.compute_sigmas("karras", 12, schedule, sigma_min=0.1, sigma_max=10, rho=3),
        K.get_sigmas_karras(12, 0.1, 10, 3.0),
        rtol=1e-6,
        atol=0,
    )
    # rho only reaches schedulers that have one; 0/None keep the model's range
    torch.testing.assert_close(S.compute_sigmas("exponential", 5, schedule, rho=3), S.exponential(5, *_range(schedule)))
    torch.testing.assert_close(S.compute_sigmas("Automatic", 5, schedule), S.uniform(5, 0, 0, schedule))
    sdxl = S.compute_sigmas("Align Your Steps", 11, schedule, is_sdxl=True)
    torch.testing.assert_close(sdxl[:-1], torch.tensor(PUBLISHED_AYS_SDXL))
    skewed = S.compute_sigmas("beta", 6, schedule, beta_alpha=0.3, beta_beta=0.9)
    assert not torch.allclose(skewed, S.compute_sigmas("beta", 6, schedule))


def _range(schedule: DiscreteSchedule) -> tuple[float, float]:
    return float(schedule.sigmas[0]), float(schedule.sigmas[-1])


def test_scheduler_table_and_lookup():
    assert [s.label for s in S.schedulers] == [
        "Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
        "Align Your Steps", "Simple", "Normal", "DDIM", "Beta",
    ]  # fmt: skip
    assert S.schedulers_map["karras"] is S.schedulers_map["Karras"]
    assert S.find_scheduler("sgmuniform").name == "sgm_uniform"
    assert S.find_scheduler("align your steps").name == "align_your_steps"
    assert S.find_scheduler(None).name == "automatic"
    assert S.schedulers_map["Karras"].default_rho == 7.0 and S.schedulers_map["polyexponential"].default_rho == 1.0
    with pytest.raises(ValueError, match="valid schedulers: Automatic, Uniform"):
        S.find_scheduler("nope")
