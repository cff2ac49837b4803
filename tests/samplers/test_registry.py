"""Tests for modules/samplers/registry.py and the A1111 compatibility module modules/sd_samplers.py.

Reference: A1111 1.10's sampler table (``sd_samplers_kdiffusion.samplers_k_diffusion``, ``sd_samplers_timesteps``,
``sd_samplers_lcm``), its ``KDiffusionSampler.get_sigmas`` rules and ``sd_samplers.get_sampler_and_scheduler``.
"""

from __future__ import annotations

import pytest
import torch

from modules import sd_samplers
from modules.samplers import kdiffusion as kd
from modules.samplers import kdiffusion_sde as kds
from modules.samplers import registry
from modules.samplers.denoiser import LCMSchedule, model_sigmas
from modules.samplers.noise import BrownianTreeNoiseSampler, ImageNoise
from modules.samplers.schedulers import exponential, karras
from modules.sd.schedule import DiscreteSchedule

A1111_ORDER = [
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a", "Euler",
    "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
]  # fmt: skip


@pytest.fixture(scope="module")
def schedule() -> DiscreteSchedule:
    return DiscreteSchedule.ldm_linear()


def model_range(schedule: DiscreteSchedule) -> tuple[float, float]:
    return float(schedule.sigmas[0]), float(schedule.sigmas[-1])


def test_table_is_in_a1111_order_with_dpmpp_2m_first():
    names = registry.sampler_names()
    assert names[: len(A1111_ORDER)] == A1111_ORDER
    assert names[-1] == "LCM"
    assert registry.default_sampler().name == "DPM++ 2M"
    if "DDIM" in names:  # registered by modules/samplers/timesteps.py
        assert names[len(A1111_ORDER) : len(A1111_ORDER) + 4] == ["DDIM", "DDIM CFG++", "PLMS", "UniPC"]


def test_a1111_options():
    options = {s.name: dict(s.options) for s in registry.all_samplers()}
    assert options["DPM++ 2M"] == {"scheduler": "karras"}
    assert options["DPM++ 2M SDE Heun"] == {"scheduler": "exponential", "brownian_noise": True, "solver_type": "heun"}
    assert options["DPM++ 3M SDE"] == {
        "scheduler": "exponential", "discard_next_to_last_sigma": True, "brownian_noise": True,
    }  # fmt: skip
    assert options["DPM2 a"] == {
        "scheduler": "karras", "discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True,
    }  # fmt: skip
    assert options["Euler a"] == {"uses_ensd": True} and options["Euler"] == {}
    assert options["Restart"] == {"scheduler": "karras", "second_order": True}
    assert registry.find_sampler("DPM++ 2M SDE Heun").function is kds.sample_dpmpp_2m_sde
    assert registry.find_sampler("Restart").function is kd.sample_restart


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Euler a", "Euler a"),
        ("euler A", "Euler a"),
        ("k_euler_ancestral", "Euler a"),
        ("K_DPMPP_2M", "DPM++ 2M"),
        ("k_dpm_ad", "DPM adaptive"),
        ("restart", "Restart"),
        ("k_lcm", "LCM"),
        ("DPM++ 2M SDE Heun", "DPM++ 2M SDE Heun"),
    ],
)
def test_find_by_name_or_alias(query, expected):
    assert registry.find_sampler(query).name == expected
    assert registry.split_sampler_scheduler(query) == (expected, None)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("DPM++ 2M Karras", ("DPM++ 2M", "karras")),
        ("DPM++ 2M SDE Exponential", ("DPM++ 2M SDE", "exponential")),
        ("DPM++ 2M SDE Heun Karras", ("DPM++ 2M SDE Heun", "karras")),
        ("dpm2 a karras", ("DPM2 a", "karras")),
        ("Euler SGMUniform", ("Euler", "sgm_uniform")),
        ("Euler a Align Your Steps", ("Euler a", "align_your_steps")),
        ("k_dpmpp_2m_ka", ("DPM++ 2M", "karras")),
        ("k_dpmpp_3m_sde_exp", ("DPM++ 3M SDE", "exponential")),
    ],
)
def test_legacy_names_split_into_sampler_and_scheduler(query, expected):
    assert registry.split_sampler_scheduler(query) == expected
    assert registry.find_sampler(query).name == expected[0]


@pytest.mark.parametrize("query", ["Euler b", "DPM++ 5M", "Karras", "Foo Karras", "k_foo_ka"])
def test_unknown_names_list_valid_ones(query):
    with pytest.raises(ValueError, match=r"valid samplers: DPM\+\+ 2M, DPM\+\+ SDE"):
        registry.find_sampler(query)


def test_resolve_and_second_order():
    sampler, scheduler = registry.resolve("DPM++ 2M Karras", "Exponential")
    assert (sampler.name, scheduler.name) == ("DPM++ 2M", "karras")  # the legacy suffix wins, as in A1111
    assert registry.resolve(None, None)[0].name == "DPM++ 2M"
    assert registry.resolve("Euler", None)[1].name == "automatic"
    second = {"DPM++ SDE", "DPM++ 2S a", "Heun", "DPM2", "DPM2 a", "Restart"}
    for name in A1111_ORDER:
        assert registry.is_second_order(name) == (name in second), name
    assert registry.is_second_order("DPM2 a Karras")


def test_sigmas_for_automatic_uses_the_sampler_default_or_the_model(schedule):
    lo, hi = model_range(schedule)
    torch.testing.assert_close(registry.sigmas_for("DPM++ 2M", "Automatic", 20, schedule), karras(20, lo, hi))
    torch.testing.assert_close(registry.sigmas_for("DPM++ 2M SDE", None, 20, schedule), exponential(20, lo, hi))
    torch.testing.assert_close(registry.sigmas_for("Euler a", "Automatic", 20, schedule), model_sigmas(schedule, 20))
    torch.testing.assert_close(registry.sigmas_for("Euler", "Karras", 20, schedule), karras(20, lo, hi))
    torch.testing.assert_close(registry.sigmas_for("Euler Karras", None, 20, schedule), karras(20, lo, hi))
    torch.testing.assert_close(registry.sigmas_for("DPM++ 2M", "Uniform", 20, schedule), model_sigmas(schedule, 20))


def test_sigmas_for_discards_the_next_to_last_sigma(schedule):
    lo, hi = model_range(schedule)
    got = registry.sigmas_for("DPM2", "Automatic", 20, schedule)
    full = karras(21, lo, hi)
    assert got.shape == (21,)
    torch.testing.assert_close(got, torch.cat([full[:-2], full[-1:]]))
    forced = registry.sigmas_for("Euler", "Karras", 20, schedule, always_discard_next_to_last_sigma=True)
    torch.testing.assert_close(forced, got)


def test_sigmas_for_overrides_and_model_family(schedule):
    got = registry.sigmas_for("Euler", "Karras", 10, schedule, sigma_min=0.1, sigma_max=10, rho=5)
    torch.testing.assert_close(got, karras(10, 0.1, 10, rho=5))
    sd15 = registry.sigmas_for("Euler", "Align Your Steps", 11, schedule)
    sdxl = registry.sigmas_for("Euler", "Align Your Steps", 11, schedule, is_sdxl=True)
    assert sd15[1].item() == pytest.approx(6.475) and sdxl[1].item() == pytest.approx(6.315)


def test_sigmas_for_lcm_uses_its_50_step_table(schedule):
    lcm = LCMSchedule(schedule)
    torch.testing.assert_close(registry.sigmas_for("LCM", "Automatic", 4, schedule), lcm.get_sigmas(4))
    karras_lcm = registry.sigmas_for("LCM", "Karras", 4, schedule)
    torch.testing.assert_close(karras_lcm, karras(4, lcm.sigma_min, lcm.sigma_max))


def test_sampler_knobs_follow_a1111():
    find = registry.find_sampler
    churn = {"s_churn": 0.5, "s_tmin": 0.1, "s_tmax": 9.0, "s_noise": 1.01}
    assert registry.sampler_knobs(find("Euler"), eta=1.0, **churn) == churn
    assert registry.sampler_knobs(find("Euler a"), eta=0.7, **churn) == {"eta": 0.7}
    assert registry.sampler_knobs(find("DPM++ 2M SDE Heun"), eta=1.0, s_noise=1.02) == {
        "eta": 1.0, "s_noise": 1.02, "solver_type": "heun",
    }  # fmt: skip
    assert registry.sampler_knobs(find("DPM++ 2M"), eta=1.0) == {}
    assert registry.sampler_knobs(find("DPM adaptive"), eta=1.0, s_noise=2.0) == {"eta": 1.0}
    noise = ImageNoise([1], (4, 8, 8))
    assert registry.sampler_knobs(find("LCM"), noise_sampler=noise) == {"noise_sampler": noise}
    assert registry.sampler_knobs(find("LMS"), noise_sampler=noise) == {}


def test_make_noise_sampler_gives_brownian_trees_to_sde_samplers():
    x = torch.zeros(2, 4, 8, 8)
    sigmas = karras(10, 0.03, 14.6)
    image_noise = ImageNoise([1, 2], (4, 8, 8))
    sde = registry.make_noise_sampler(registry.find_sampler("DPM++ SDE"), x, sigmas, [1, 2], image_noise)
    assert isinstance(sde, BrownianTreeNoiseSampler)
    assert registry.make_noise_sampler(registry.find_sampler("Euler a"), x, sigmas, [1, 2], image_noise) is image_noise


def test_register_sampler_keeps_a1111_order(monkeypatch):
    monkeypatch.setattr(registry, "_samplers", dict(registry._samplers))

    def my_sampler(model, x, sigmas, **kwargs):
        return x

    entry = registry.register_sampler("My Sampler", my_sampler, aliases=["mine"], options={"second_order": True})
    assert entry.kind == "timesteps"
    assert registry.sampler_names()[-1] == "My Sampler"
    assert registry.find_sampler("MINE") is entry and registry.is_second_order("My Sampler")
    with pytest.raises(ValueError, match="already registered"):
        registry.register_sampler("My Sampler", my_sampler)
    registry.register_sampler("PLMS", my_sampler, replace=True)
    names = registry.sampler_names()
    assert names.index("Restart") < names.index("PLMS") < names.index("LCM")


# --- modules/sd_samplers.py ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sampler", "scheduler", "expected"),
    [
        ("DPM++ 2M Karras", None, ("DPM++ 2M", "Automatic")),  # karras is DPM++ 2M's default
        ("DPM++ 2M", "Exponential", ("DPM++ 2M", "Exponential")),
        ("Euler a", "karras", ("Euler a", "Karras")),
        ("Euler a Karras", "Exponential", ("Euler a", "Karras")),
        ("DPM++ 2M SDE Karras", "Automatic", ("DPM++ 2M SDE", "Karras")),
        (None, None, ("DPM++ 2M", "Automatic")),
        ("No Such Sampler", "No Such Scheduler", ("DPM++ 2M", "Automatic")),
    ],
)
def test_get_sampler_and_scheduler_matches_a1111(sampler, scheduler, expected):
    assert sd_samplers.get_sampler_and_scheduler(sampler, scheduler) == expected


def test_get_sampler_and_scheduler_without_converting_automatic():
    got = sd_samplers.get_sampler_and_scheduler("DPM++ 2M Karras", None, convert_automatic=False)
    assert got == ("DPM++ 2M", "Karras")
    assert sd_samplers.get_sampler_from_infotext({"Sampler": "Euler a", "Schedule type": "Karras"}) == "Euler a"
    assert sd_samplers.get_scheduler_from_infotext({"Sampler": "DPM++ 2M Karras"}) == "Automatic"


def test_sd_samplers_lists():
    assert [s.name for s in sd_samplers.all_samplers] == registry.sampler_names()
    assert sd_samplers.all_samplers_map["Euler a"].aliases == ("k_euler_a", "k_euler_ancestral")
    assert sd_samplers.samplers_map["k_euler_a"] == "Euler a" and sd_samplers.samplers_map["euler a"] == "Euler a"
    assert sd_samplers.find_sampler_config(None).name == "DPM++ 2M"
    assert sd_samplers.find_sampler_config("Heun").options["second_order"] is True
    assert sd_samplers.find_sampler_config("heun") is None  # A1111's lookup is exact
    assert sd_samplers.visible_sampler_names() == registry.sampler_names()
    with pytest.raises(AttributeError):
        sd_samplers.no_such_attribute  # noqa: B018
